defmodule ElixirScope.MCP do
  @moduledoc """
  A Model Context Protocol server over ElixirScope's queries: an AI assistant asks the same
  questions a person asks in IEx (why did this process crash, what was its state then, which
  messages flowed) through tools, each a thin call of the public query API
  (`ElixirScope.MCP.Tools` lists them).

  This module is the protocol: JSON-RPC 2.0 messages in, answers out, whatever carries them.
  Two transports carry them:

    * Streamable HTTP: `POST /mcp` on the web UI's server (`ElixirScope.UI.start/1`), with the
      UI's rules: loopback by default, a token otherwise (`Authorization: Bearer TOKEN`), and a
      request from a browser page of another origin refused;
    * stdio: `mix elixir_scope.mcp`, one JSON-RPC message per line.

  The server is stateless: `initialize` is answered (protocol revisions 2024-11-05 to
  2025-11-25, and 2026-07-28's requests without it), no session is kept, and every request
  is answered on its own.

  ## Examples

      iex> ElixirScope.MCP.handle(%{"jsonrpc" => "2.0", "id" => 1, "method" => "ping"}, %{})
      %{jsonrpc: "2.0", id: 1, result: %{}}

      iex> ElixirScope.MCP.handle(%{"jsonrpc" => "2.0", "id" => 2, "method" => "nope"}, %{})
      %{jsonrpc: "2.0", id: 2, error: %{code: -32601, message: "method not found: nope"}}
  """

  alias ElixirScope.MCP.Tools

  @versions ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"]
  @latest hd(@versions)

  @typedoc """
  Where the tools read and what they may do: `store` (`:default` for the running capture, or a
  store), `allow_tracing` (tools that change what is traced answer only when true).
  """
  @type context :: %{
          optional(:store) => ElixirScope.Store.t() | :default,
          optional(:allow_tracing) => boolean()
        }

  @doc "The protocol revisions this server speaks, newest first."
  @spec versions() :: [String.t()]
  def versions, do: @versions ++ ["2026-07-28"]

  @doc """
  Answers one decoded JSON-RPC message (or a batch, a list of them): the response map, or
  `nil` for a notification (which is not answered). Never raises.
  """
  @spec handle(term(), context()) :: map() | [map()] | nil
  def handle(batch, ctx) when is_list(batch) and batch != [] do
    # (Batches belong to revisions up to 2025-03-26; a batch holds messages, not batches.)
    answers =
      Enum.map(batch, fn
        m when is_map(m) -> handle(m, ctx)
        other -> handle({:not_a_message, other}, ctx)
      end)

    case Enum.reject(answers, &is_nil/1) do
      [] -> nil
      answers -> answers
    end
  end

  def handle(%{"jsonrpc" => "2.0", "method" => method} = msg, ctx) when is_binary(method) do
    params = Map.get(msg, "params", %{})

    case Map.fetch(msg, "id") do
      # A notification (initialized, cancelled, ...): nothing to answer.
      :error ->
        nil

      {:ok, id} when is_binary(id) or is_integer(id) ->
        answer(id, call(method, params, ctx))

      {:ok, _} ->
        error(nil, -32600, "invalid request: an id is a string or an integer")
    end
  rescue
    e -> error(Map.get(msg, "id"), -32603, "internal error: " <> Exception.message(e))
  end

  def handle(%{"jsonrpc" => "2.0", "id" => _, "result" => _}, _ctx), do: nil
  def handle(%{"jsonrpc" => "2.0", "id" => _, "error" => _}, _ctx), do: nil

  def handle(other, _ctx) do
    id = if is_map(other), do: Map.get(other, "id")

    error(
      if(is_binary(id) or is_integer(id), do: id),
      -32600,
      "invalid request: expected a JSON-RPC 2.0 message"
    )
  end

  defp call("initialize", params, _ctx) when is_map(params) do
    asked = params["protocolVersion"]

    {:ok,
     %{
       protocolVersion: if(asked in @versions, do: asked, else: @latest),
       capabilities: %{tools: %{listChanged: false}},
       serverInfo: %{name: "elixir_scope", title: "ElixirScope", version: version()},
       instructions:
         "ElixirScope answers questions about a captured BEAM application: start with status " <>
           "and processes, then why_crashed, state_at, state_timeline, message_flow or " <>
           "find_events. Pids are written #PID<0.123.0>; names are registered names or modules."
     }}
  end

  defp call("ping", _params, _ctx), do: {:ok, %{}}

  defp call("tools/list", _params, ctx), do: {:ok, %{tools: Tools.list(ctx)}}

  defp call("tools/call", %{"name" => name} = params, ctx) when is_binary(name) do
    args = Map.get(params, "arguments", %{})

    cond do
      not is_map(args) -> {:error, -32602, "invalid params: arguments is an object"}
      true -> Tools.call(name, args, ctx)
    end
  end

  defp call("tools/call", _params, _ctx),
    do: {:error, -32602, "invalid params: expected a tool name"}

  defp call("initialize", _params, _ctx),
    do: {:error, -32602, "invalid params: expected an object"}

  defp call(method, _params, _ctx), do: {:error, -32601, "method not found: #{method}"}

  defp answer(id, {:ok, result}), do: %{jsonrpc: "2.0", id: id, result: result}
  defp answer(id, {:error, code, message}), do: error(id, code, message)

  defp error(id, code, message),
    do: %{jsonrpc: "2.0", id: id, error: %{code: code, message: message}}

  defp version, do: :elixir_scope |> Application.spec(:vsn) |> to_string()
end
