/**
 * The `tls` setting: the mode, the certificate's name and the Let's Encrypt contact. With
 * letsencrypt, a name or address Let's Encrypt refuses is refused here: certbot-renew.sh would
 * otherwise fail every 15 minutes for as long as the host bills, nginx serving its placeholder
 * certificate to every client.
 */
import type { Problems } from "./checks.ts";
import type { TlsConfig, TlsMode } from "./types.ts";

const TLS_MODES: readonly TlsMode[] = ["letsencrypt", "self-signed", "off"];

/**
 * A DNS name of ASCII labels, its last one (the TLD) letters, so never an IP address, or an
 * international TLD in its xn-- form (.рф is xn--p1ai, .中国 xn--fiqs8s), as the messages ask
 * names to be written and for which Let's Encrypt issues. The one rule for tls.domain and the
 * domain of tls.email.
 */
const DNS_NAME = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+([a-z]{2,63}|xn--[a-z0-9-]{0,58}[a-z0-9])$/i;

/**
 * Domains no public DNS name or mailbox is under, by the name's end: example and test names
 * (RFC 2606, RFC 6761: example.com, .test, .invalid, .localhost), special-use ones (.local for
 * mDNS, RFC 6762; .onion, RFC 7686; .alt, RFC 9476; .arpa, with home.arpa, RFC 8375), .internal
 * (ICANN's private-use TLD) and the private ones RFC 6762 Appendix G lists (.lan, .home, .corp,
 * .intranet, .private) or distributions use (.localdomain). Let's Encrypt (Boulder) takes only
 * names under a public suffix, both for a certificate ("Cannot issue for …") and for an account's
 * contact address. One list for both, so they cannot drift apart.
 */
const RESERVED_DOMAIN =
  /(?:^|\.)(example\.(?:com|net|org)|example|test|invalid|localhost|localdomain|local|onion|alt|arpa|internal|lan|home|corp|intranet|private)$/i;

/** The reserved domain `name` is under, as a message shows it (".local", "example.com"), or undefined. */
function reservedDomain(name: string): string | undefined {
  const end = RESERVED_DOMAIN.exec(name)?.[1]?.toLowerCase();
  return end === undefined ? undefined : end.includes(".") ? end : `.${end}`;
}

/**
 * An address Let's Encrypt parses as a contact (certbot sends "mailto:" + it, read with Go's
 * net/mail): plain ASCII, none of RFC 5322's specials before the @ (a "mailto:" prefix, a quoted
 * or commented local part), and a DNS name after it (no [address] literal).
 */
function letsEncryptParses(email: string): boolean {
  const at = email.lastIndexOf("@");
  return /^[\x21-\x7e]+$/.test(email) && !/[:<>(),;"[\]\\]/.test(email.slice(0, at)) && DNS_NAME.test(email.slice(at + 1));
}

export function checkTls(p: Problems, value: unknown, allowedCidrs: readonly string[]): TlsConfig | undefined {
  const t = p.settingMap("tls", value, ["mode", "domain", "email"], "mode");
  const mode = p.oneOf("tls.mode", t.mode, TLS_MODES) ?? "letsencrypt";
  const domain = p.string("tls.domain", t.domain);
  const email = p.string("tls.email", t.email);
  const letsencrypt = mode === "letsencrypt";
  if (domain !== undefined && !DNS_NAME.test(domain)) {
    p.add("tls.domain", domain, "must be a DNS name such as llm.example.com");
  } else if (domain !== undefined && letsencrypt && reservedDomain(domain)) {
    // A self-signed certificate may name the host as an internal network knows it.
    p.add("tls.domain", domain, `is under a reserved or private domain (${reservedDomain(domain)}), for which Let's Encrypt does not issue certificates; ` +
      "use a public DNS name, or tls.mode self-signed for an internal one");
  }
  // The other modes ignore the address (the plan warns), so it breaks nothing there.
  if (email !== undefined && !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email)) p.add("tls.email", email, "must be an email address");
  else if (email !== undefined && letsencrypt && !letsEncryptParses(email)) {
    p.add("tls.email", email, "is not an address Let's Encrypt accepts: it must be plain ASCII (an international domain in its xn-- form), at a DNS name, " +
      'with none of : < > ( ) , ; " [ ] \\ before the @ (no "mailto:"), e.g. ops@your-company.com; or leave tls.email out');
  } else if (email !== undefined && letsencrypt && reservedDomain(email.slice(email.lastIndexOf("@") + 1))) {
    p.add("tls.email", email, `is at a reserved or private domain (${reservedDomain(email.slice(email.lastIndexOf("@") + 1))}), which Let's Encrypt refuses: ` +
      "it takes only an address at a public domain; use a real address or leave tls.email out");
  }
  // Let's Encrypt checks port 80 from addresses it does not publish, so HTTP-01 only works
  // when port 80 is open to the whole internet.
  if (letsencrypt && !allowedCidrs.includes("0.0.0.0/0")) {
    p.add("tls.mode", mode,
      "needs port 80 open to everyone (allowedCidrs must include 0.0.0.0/0) for Let's Encrypt's HTTP-01 check; use self-signed for a restricted endpoint");
  }
  return { mode, ...(domain ? { domain: domain.toLowerCase() } : {}), ...(email ? { email } : {}) };
}
