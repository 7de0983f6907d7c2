defmodule Mix.Tasks.ElixirScope.Mcp do
  @shortdoc "Serves ElixirScope's MCP tools over stdio (a saved trace, or a running node)"

  @moduledoc """
  An MCP server on standard input and output, for an assistant to launch: one JSON-RPC message
  per line in, one answer per line out (see `ElixirScope.MCP`). Nothing else is written to
  standard output; notes go to standard error.

      mix elixir_scope.mcp --trace PATH
      mix elixir_scope.mcp --node app@127.0.0.1 --cookie SECRET [--allow-tracing]

  With `--trace`, the tools read a trace written by `ElixirScope.save/2` or a persisted
  capture. With `--node`, this process joins the Erlang distribution and every message is
  answered on that node, by its running capture (the node must have ElixirScope loaded).
  Compile the project first (`mix compile`): a build's messages would otherwise reach the
  client.

  ## Options

    * `--trace PATH` - a trace directory (or one segment file).
    * `--node NAME`, `--cookie COOKIE` - a running node to attach to (names with a host part
      use long names).
    * `--allow-tracing` - let the assistant start tracing (`trace_process`, ...).
  """

  use Mix.Task
  require Logger

  @impl true
  def run(args) do
    {opts, rest, invalid} =
      OptionParser.parse(args,
        strict: [trace: :string, node: :string, cookie: :string, allow_tracing: :boolean]
      )

    unless rest == [] and invalid == [] and opts[:trace] != nil != (opts[:node] != nil) do
      Mix.raise(
        "usage: mix elixir_scope.mcp --trace PATH | --node NAME --cookie COOKIE [--allow-tracing]"
      )
    end

    # Standard output is the protocol's: logs go to standard error.
    Logger.configure_backend(:console, device: :standard_error)
    {:ok, _} = Application.ensure_all_started(:elixir_scope)
    answer = answerer(opts)
    # Raw bytes both ways: the messages are UTF-8 JSON, read and written as they are.
    :io.setopts(:standard_io, binary: true, encoding: :latin1)
    loop(answer)
  end

  # How a decoded message gets its answer: here over a trace, or on the node attached to.
  defp answerer(opts) do
    ctx = %{allow_tracing: opts[:allow_tracing] == true}

    case opts[:trace] do
      path when is_binary(path) ->
        case ElixirScope.open(path) do
          {:ok, trace} ->
            &ElixirScope.MCP.handle(&1, Map.put(ctx, :store, trace))

          {:error, reason} ->
            Mix.raise("cannot open #{path}: #{ElixirScope.Error.describe(reason)}")
        end

      nil ->
        node = attach!(opts[:node], opts[:cookie])
        &remote(node, &1, ctx)
    end
  end

  defp attach!(name, cookie) do
    unless is_binary(cookie), do: Mix.raise("--node needs --cookie")
    mode = if String.contains?(name, "."), do: :longnames, else: :shortnames
    host = name |> String.split("@") |> List.last()
    me = :"elixir_scope_mcp_#{System.unique_integer([:positive])}@#{host}"

    with {:ok, _} <- Node.start(me, mode),
         true <- Node.set_cookie(String.to_atom(cookie)),
         node = String.to_atom(name),
         true <- Node.connect(node) do
      node
    else
      _ -> Mix.raise("cannot connect to #{name}")
    end
  end

  defp remote(node, message, ctx) do
    :erpc.call(node, ElixirScope.MCP, :handle, [message, ctx], 60_000)
  catch
    kind, reason ->
      id = if is_map(message), do: Map.get(message, "id")

      %{
        jsonrpc: "2.0",
        id: id,
        error: %{code: -32603, message: "the node did not answer: #{inspect({kind, reason})}"}
      }
  end

  # An answer JSON cannot carry (it should not happen: tool texts are made valid) is an error
  # answer, not the end of the server.
  defp encode(reply) do
    ElixirScope.UI.JSON.encode!(reply)
  rescue
    e in ArgumentError ->
      id = if is_map(reply), do: Map.get(reply, :id)

      ElixirScope.UI.JSON.encode!(%{
        jsonrpc: "2.0",
        id: id,
        error: %{code: -32603, message: Exception.message(e)}
      })
  end

  defp loop(answer) do
    case IO.binread(:stdio, :line) do
      :eof ->
        :ok

      {:error, _} ->
        :ok

      line ->
        case String.trim(line) do
          "" ->
            :ok

          text ->
            reply =
              case ElixirScope.UI.JSON.decode(text) do
                {:ok, message} ->
                  answer.(message)

                {:error, {:invalid_json, why}} ->
                  %{
                    jsonrpc: "2.0",
                    id: nil,
                    error: %{code: -32700, message: "parse error: " <> why}
                  }
              end

            if reply != nil, do: IO.binwrite(:stdio, encode(reply) <> "\n")
        end

        loop(answer)
    end
  end
end
