//! A tiny MCP server (stdio, node) offering one tool, `secret_word`, whose answer names a word
//! no model could guess: a test that finds `PINEAPPLE-42` in a run's events knows the agent
//! loaded the configured MCP server and called its tool.

use std::path::{Path, PathBuf};

/// What the tool answers (followed by ` for <topic>`).
pub const SECRET: &str = "the secret word is PINEAPPLE-42";

/// Answers `initialize`, `tools/list` and `tools/call` over newline-delimited JSON-RPC.
const SERVER: &str = r#"
const rl = require('readline').createInterface({ input: process.stdin });
const send = (m) => process.stdout.write(JSON.stringify(m) + '\n');
rl.on('line', (line) => {
  let m; try { m = JSON.parse(line); } catch { return; }
  if (m.id === undefined) return;
  const ok = (result) => send({ jsonrpc: '2.0', id: m.id, result });
  switch (m.method) {
    case 'initialize':
      return ok({ protocolVersion: (m.params && m.params.protocolVersion) || '2024-11-05',
        capabilities: { tools: {} }, serverInfo: { name: 'words', version: '1.0.0' } });
    case 'tools/list':
      return ok({ tools: [{ name: 'secret_word', description: 'Returns the secret word',
        inputSchema: { type: 'object', properties: { topic: { type: 'string' } } } }] });
    case 'tools/call':
      return ok({ content: [{ type: 'text', text: 'the secret word is PINEAPPLE-42 for ' +
        ((m.params.arguments || {}).topic || '?') }] });
    case 'ping':
      return ok({});
    default:
      return send({ jsonrpc: '2.0', id: m.id, error: { code: -32601, message: 'no such method' } });
  }
});
"#;

/// Write the server's script into `dir`; run it with `node <path>`.
pub fn write_words_server(dir: &Path) -> std::io::Result<PathBuf> {
    let path = dir.join("words-mcp.js");
    std::fs::write(&path, SERVER)?;
    Ok(path)
}
