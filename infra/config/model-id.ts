/**
 * A Hugging Face repository id as the Hub takes it (huggingface_hub's validate_repo_id): owner and
 * name of letters, digits, _ . -, each starting and ending with a letter, digit or _, no `--` or
 * `..`, a name of at most 96 characters, not ending in .git. The id becomes a URL path twice, in
 * pulumi up's Hub check (hub-check.ts) and in vLLM's download on the host, so it must be the
 * Hub's own form: any other fails that download after the host bills, and `org/..` would name
 * another URL.
 */
export function isHubRepoId(id: string): boolean {
  const part = /^\w(?:[\w.-]*\w)?$/;
  const [owner, name, ...rest] = id.split("/");
  return rest.length === 0 && owner !== undefined && name !== undefined && part.test(owner) && part.test(name) &&
    name.length <= 96 && !/--|\.\./.test(id) && !name.endsWith(".git");
}
