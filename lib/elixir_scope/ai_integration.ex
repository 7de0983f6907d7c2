defmodule ElixirScope.AIIntegration do
  @moduledoc """
  The seed's Tidewave functions, as wrappers of the MCP server's tools (`ElixirScope.MCP.Tools`),
  for projects that register Elixir functions as Tidewave tools: each takes the tool's
  arguments as a map with string keys and returns the tool's answer text, `{:ok, text}`, or
  `{:error, text}` when it could not be answered.

      ElixirScope.AIIntegration.tidewave_get_state_timeline(%{"pid" => "#PID<0.201.0>"})

  `setup/0` lists the tools (name, description, input schema) for a registry to declare.

  ## Examples

      iex> ElixirScope.AIIntegration.setup() |> Enum.map(& &1.name) |> Enum.member?("tidewave_get_state_timeline")
      true
  """

  alias ElixirScope.MCP.Tools

  # The seed's names, and the tools they call.
  @seed %{
    tidewave_get_state_timeline: "state_timeline",
    tidewave_get_message_flow: "message_flow",
    tidewave_get_function_calls: "function_calls",
    tidewave_trace_module: "trace_module",
    tidewave_trace_process: "trace_process",
    tidewave_trace_named_process: "trace_named_process",
    tidewave_get_supervision_tree: "supervision_tree",
    tidewave_get_execution_path: "execution_path",
    tidewave_analyze_state_changes: "analyze_state_changes"
  }

  @doc """
  The seed's tools as a registry declares them: `%{name, description, inputSchema, function}`,
  `function` the name of the function here. Tracing tools are listed; they answer only when
  called with `allow_tracing: true`.
  """
  @spec setup() :: [map()]
  def setup do
    tools = Tools.list(%{allow_tracing: true}) |> Map.new(&{&1.name, &1})

    for {fun, tool} <- Enum.sort(@seed) do
      t = tools[tool]

      %{
        name: Atom.to_string(fun),
        description: t.description,
        inputSchema: t.inputSchema,
        function: fun
      }
    end
  end

  for {fun, tool} <- @seed do
    @doc "The MCP tool `#{tool}` (see `ElixirScope.MCP.Tools`)."
    @spec unquote(fun)(map(), keyword()) :: {:ok, String.t()} | {:error, String.t()}
    def unquote(fun)(args, opts \\ []) when is_map(args) do
      opts = ElixirScope.Options.validate!(opts, store: nil, allow_tracing: false)
      ctx = %{store: opts[:store] || :default, allow_tracing: opts[:allow_tracing]}

      case Tools.call(unquote(tool), args, ctx) do
        {:ok, %{content: [%{text: text}], isError: false}} -> {:ok, text}
        {:ok, %{content: [%{text: text}], isError: true}} -> {:error, text}
        {:error, _code, message} -> {:error, message}
      end
    end
  end
end
