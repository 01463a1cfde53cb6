// Writes GitHub's REST API description cut down to the operations agentpool calls (with every
// component they reference), so the request-validating mock server starts in seconds instead of
// loading the whole document. Usage: node subset.mjs OUT.json
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const file = require.resolve("@octokit/openapi/generated/api.github.com.json");
const doc = JSON.parse(readFileSync(file, "utf8"));

// Every path agentpool's GitHub client calls; keep this in step with crates/agentpool-github.
const PATHS = [
  "/repos/{owner}/{repo}/pulls",
  "/repos/{owner}/{repo}/issues/{issue_number}/comments",
  "/repos/{owner}/{repo}/issues/comments/{comment_id}",
  "/app/installations/{installation_id}/access_tokens",
  "/repos/{owner}/{repo}/installation",
  "/installation/token",
  "/repos/{owner}/{repo}/pulls/{pull_number}/reviews/{review_id}/comments",
  "/repos/{owner}/{repo}",
];

const out = { openapi: doc.openapi, info: doc.info, servers: doc.servers, paths: {}, components: {} };
for (const p of PATHS) {
  if (!doc.paths[p]) throw new Error(`GitHub's document has no path ${p}`);
  out.paths[p] = doc.paths[p];
}
// Copy referenced components until no new reference appears.
const seen = new Set();
const queue = [out.paths];
while (queue.length) {
  const v = queue.pop();
  if (Array.isArray(v)) { v.forEach((x) => queue.push(x)); continue; }
  if (!v || typeof v !== "object") continue;
  for (const [k, x] of Object.entries(v)) {
    if (k === "$ref" && typeof x === "string" && x.startsWith("#/components/") && !seen.has(x)) {
      seen.add(x);
      const [, , kind, name] = x.split("/");
      out.components[kind] ??= {};
      out.components[kind][name] = doc.components[kind][name];
      queue.push(doc.components[kind][name]);
    } else {
      queue.push(x);
    }
  }
}
if (doc.components.securitySchemes) out.components.securitySchemes = doc.components.securitySchemes;
writeFileSync(process.argv[2], JSON.stringify(out));
