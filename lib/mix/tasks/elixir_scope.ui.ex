defmodule Mix.Tasks.ElixirScope.Ui do
  @shortdoc "Serves the ElixirScope web UI over a saved trace"

  @moduledoc """
  Opens a trace written by `ElixirScope.save/2` or `ElixirScope.start(persist: ...)` and serves
  the web UI over it (see `ElixirScope.UI`), until interrupted:

      mix elixir_scope.ui PATH [--port N] [--ip ADDRESS]

  The pages are the live UI's, reading the trace instead of a capture (no controls).

  ## Options

    * `--port N` - the port (default 4040; 0 picks a free one).
    * `--ip ADDRESS` - the address to bind (default 127.0.0.1); any other wants the token the
      printed URL carries.
  """

  use Mix.Task

  @impl true
  def run(args) do
    {opts, paths, invalid} = OptionParser.parse(args, strict: [port: :integer, ip: :string])

    case {paths, invalid} do
      {[path], []} -> serve(path, opts)
      _ -> Mix.raise("usage: mix elixir_scope.ui PATH [--port N] [--ip ADDRESS]")
    end
  end

  defp serve(path, opts) do
    {:ok, _} = Application.ensure_all_started(:elixir_scope)

    trace =
      case ElixirScope.open(path) do
        {:ok, trace} ->
          trace

        {:error, reason} ->
          Mix.raise("cannot open #{path}: #{ElixirScope.Error.describe(reason)}")
      end

    case ElixirScope.UI.start(Keyword.put(opts, :store, trace)) do
      {:ok, %{url: url}} ->
        Mix.shell().info("ElixirScope UI at #{url} (#{Path.expand(path)}); Ctrl-C to stop")
        Process.sleep(:infinity)

      {:error, reason} ->
        Mix.raise("cannot serve the UI: #{inspect(reason)}")
    end
  end
end
