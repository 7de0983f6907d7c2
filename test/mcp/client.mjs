// Connects the official MCP TypeScript SDK client to ElixirScope's MCP server, over Streamable
// HTTP (node test/mcp/client.mjs http URL) or stdio (node test/mcp/client.mjs stdio CMD ARGS...),
// lists its tools and calls the ones named in the JSON read from standard input
// ([{name, arguments}]). Prints {tools, results} as JSON; exits 1 on any protocol failure.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";

const require = createRequire(new URL("../../assets/package.json", import.meta.url));
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StreamableHTTPClientTransport } = require("@modelcontextprotocol/sdk/client/streamableHttp.js");
const { StdioClientTransport } = require("@modelcontextprotocol/sdk/client/stdio.js");

const [mode, target, ...rest] = process.argv.slice(2);
const calls = JSON.parse(readFileSync(0, "utf8"));
// MCP_TOKEN, when set, is sent as a bearer token (a server bound beyond loopback wants it).
const headers = process.env.MCP_TOKEN ? { Authorization: `Bearer ${process.env.MCP_TOKEN}` } : {};
const transport =
  mode === "http"
    ? new StreamableHTTPClientTransport(new URL(target), { requestInit: { headers } })
    : new StdioClientTransport({ command: target, args: rest, stderr: "inherit" });
const client = new Client({ name: "elixir-scope-test", version: "1.0.0" });

try {
  await client.connect(transport);
  const { tools } = await client.listTools();
  const results = [];
  for (const { name, arguments: args } of calls) {
    try {
      results.push(await client.callTool({ name, arguments: args ?? {} }));
    } catch (e) {
      // A protocol error for this call (an unknown tool, bad arguments): recorded, not fatal.
      results.push({ error: { code: e.code, message: e.message } });
    }
  }
  console.log(JSON.stringify({ server: client.getServerVersion(), tools, results }));
  await client.close();
} catch (e) {
  console.error(e.stack ?? String(e));
  process.exit(1);
}
