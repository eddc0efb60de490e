import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import * as tls from "@pulumi/tls";
import { hashKey, KEY_ID_LENGTH, KEY_PREFIX, KEY_SECRET_LENGTH } from "../../api-shim/src/auth/keys.ts";
import type { BootstrapKey, TlsConfig } from "../config.ts";
import type { BootstrapKeyRecord } from "../render/shim-config.ts";

const alnum = { special: false, upper: true, lower: true, numeric: true } as const;

/** A random alphanumeric secret, kept in state (encrypted) so it is stable across updates. */
export function generatedSecret(name: string, length: number, parent: pulumi.Resource): pulumi.Output<string> {
  return pulumi.secret(new random.RandomPassword(name, { length, ...alnum }, { parent }).result);
}

export interface GeneratedKey {
  /** The plaintext key, `sk-gs-<id>_<secret>`, only ever a secret output. */
  readonly key: pulumi.Output<string>;
  /** What the shim's config holds: id and hash, never the plaintext. */
  readonly record: pulumi.Output<BootstrapKeyRecord>;
}

/**
 * A bootstrap API key in the shim's format (api-shim/src/auth/keys.ts): a public 12-character id and
 * a 32-character secret, both random and kept in state, so re-applying never makes a new key.
 */
export function bootstrapKey(prefix: string, spec: BootstrapKey, parent: pulumi.Resource): GeneratedKey {
  const id = new random.RandomString(`${prefix}-key-${spec.name}-id`, { length: KEY_ID_LENGTH, ...alnum }, { parent }).result;
  const secret = generatedSecret(`${prefix}-key-${spec.name}-secret`, KEY_SECRET_LENGTH, parent);
  const key = pulumi.secret(pulumi.interpolate`${KEY_PREFIX}${id}_${secret}`);
  // The shim's own hash; a SHA-256 of a 190-bit random key reveals nothing, so it may be
  // plaintext in the bundle.
  const hash = pulumi.unsecret(key.apply(hashKey));
  const record = pulumi.all([id, hash]).apply(([keyId, keyHash]) => ({
    id: keyId, name: spec.name, hash: keyHash, credits: spec.credits, tier: spec.tier, models: [...spec.models],
  }));
  return { key, record };
}

/** The self-signed mode's server certificate: 825 days, the longest Apple's platforms accept for one. */
export const SERVER_CERT_VALIDITY_HOURS = 24 * 825;
/** A `pulumi up` in the certificate's last 30 days replaces it. */
export const SERVER_CERT_EARLY_RENEWAL_HOURS = 24 * 30;

export interface ServerCertificate {
  /** Certificate chain and private key, PEM, as install-certificate.sh reads them. Secret. */
  readonly pem: pulumi.Output<string>;
  /** How install-certificate.sh treats it: a placeholder never replaces an issued certificate. */
  readonly mode: "replace" | "placeholder";
  /** For self-signed: the CA clients must trust. */
  readonly caCertificate?: pulumi.Output<string>;
}

/**
 * The certificate nginx starts with. Let's Encrypt: a short-lived placeholder, until certbot has
 * the real one. Self-signed: a CA made here (exported, so clients can trust it) and a server
 * certificate it signs for the host's name and address. Off: none.
 */
export function serverCertificate(prefix: string, mode: TlsConfig["mode"], names: { domain: pulumi.Input<string>; ip: pulumi.Input<string> },
  parent: pulumi.Resource): ServerCertificate | undefined {
  if (mode === "off") return undefined;
  const key = new tls.PrivateKey(`${prefix}-tls-key`, { algorithm: "ECDSA", ecdsaCurve: "P256" }, { parent });
  const subject = { commonName: names.domain, organization: "gpu-sandbox" };
  const serverUses = ["digitalSignature", "keyEncipherment", "serverAuth"];
  if (mode === "letsencrypt") {
    const cert = new tls.SelfSignedCert(`${prefix}-tls-placeholder`, {
      privateKeyPem: key.privateKeyPem, subject, dnsNames: [names.domain], ipAddresses: [names.ip],
      allowedUses: serverUses, validityPeriodHours: 24 * 30,
    }, { parent });
    return { pem: pulumi.secret(pulumi.interpolate`${cert.certPem}${key.privateKeyPem}`), mode: "placeholder" };
  }
  const caKey = new tls.PrivateKey(`${prefix}-tls-ca-key`, { algorithm: "ECDSA", ecdsaCurve: "P256" }, { parent });
  const ca = new tls.SelfSignedCert(`${prefix}-tls-ca`, {
    privateKeyPem: caKey.privateKeyPem, isCaCertificate: true, subject: { commonName: "gpu-sandbox CA", organization: "gpu-sandbox" },
    allowedUses: ["certSigning", "crlSigning", "digitalSignature"], validityPeriodHours: 24 * 365 * 10,
  }, { parent });
  const request = new tls.CertRequest(`${prefix}-tls-request`, {
    privateKeyPem: key.privateKeyPem, subject, dnsNames: [names.domain], ipAddresses: [names.ip],
  }, { parent });
  // Renewed by any `pulumi up` in its last SERVER_CERT_EARLY_RENEWAL_HOURS (the tls provider
  // replaces it then, and the deploy installs the new one): without it, only the first
  // `pulumi up` after it had expired would, and clients would have failed in between.
  const cert = new tls.LocallySignedCert(`${prefix}-tls-cert`, {
    certRequestPem: request.certRequestPem, caCertPem: ca.certPem, caPrivateKeyPem: caKey.privateKeyPem,
    allowedUses: serverUses, validityPeriodHours: SERVER_CERT_VALIDITY_HOURS, earlyRenewalHours: SERVER_CERT_EARLY_RENEWAL_HOURS,
  }, { parent });
  return {
    pem: pulumi.secret(pulumi.interpolate`${cert.certPem}${ca.certPem}${key.privateKeyPem}`),
    mode: "replace",
    caCertificate: ca.certPem,
  };
}
