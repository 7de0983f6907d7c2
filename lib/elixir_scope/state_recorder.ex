defmodule ElixirScope.StateRecorder do
  @moduledoc """
  Explicit state recording for a GenServer, for processes ElixirScope does not trace.

  Tracing a GenServer with `ElixirScope.trace/2` records its state after every callback with no
  change to its code. Where that is not wanted (the process is not traced, or another tool owns
  its tracing), `use ElixirScope.StateRecorder` in the module wraps its `init/1`,
  `handle_call/3`, `handle_cast/2`, `handle_info/2` and `handle_continue/2` so that each result's
  state is recorded into the running capture as a `:state` event.

      defmodule MyApp.Counter do
        use GenServer
        use ElixirScope.StateRecorder
        ...
      end

  When no capture is running the wrapper costs one `Process.whereis/1`. States are only
  recorded for processes that are not traced with state capture already (so they are not
  recorded twice).
  """

  alias ElixirScope.{Native, Store}

  @callbacks [init: 1, handle_call: 3, handle_cast: 2, handle_info: 2, handle_continue: 2]

  @doc false
  defmacro __using__(_opts) do
    quote do
      @before_compile ElixirScope.StateRecorder
    end
  end

  @doc false
  defmacro __before_compile__(env) do
    # Only the module's own callbacks: not the defaults `use GenServer` injects (their
    # definitions carry its context), whose `super` would be deprecated.
    for {name, arity} <- @callbacks,
        Module.defines?(env.module, {name, arity}, :def),
        {:v1, _, meta, _} = Module.get_definition(env.module, {name, arity}),
        meta[:context] == nil do
      args = Macro.generate_arguments(arity, __MODULE__)

      quote do
        defoverridable [{unquote(name), unquote(arity)}]

        def unquote(name)(unquote_splicing(args)) do
          result = super(unquote_splicing(args))
          ElixirScope.StateRecorder.record(__MODULE__, unquote(name), unquote(arity), result)
          result
        end
      end
    end
  end

  @doc """
  Records the state in a callback `result` (`{:ok, s}`, `{:reply, _, s}`, `{:noreply, s}`,
  `{:stop, _, s}`, with or without a trailing action) for the calling process, when a capture is
  running. Returns `:ok` whether or not it recorded.
  """
  @spec record(module(), atom(), arity(), term()) :: :ok
  def record(module, name, arity, result) do
    with true <- ElixirScope.running?(),
         %Store{} = store <- Store.default(),
         {:ok, state} <- state_of(result),
         false <- traced_with_states?(module, store) do
      Native.store_record(Store.ref(store), :state, self(), {module, name, arity}, state)
    end

    :ok
  end

  # This process is traced into the running capture's store, with this module's callbacks
  # return-traced: its states are recorded already.
  defp traced_with_states?(module, store) do
    ElixirScope.Tracer.ours?(self(), store) and
      Enum.any?(@callbacks, fn {f, a} ->
        match?({:traced, :global}, :erlang.trace_info({module, f, a}, :traced))
      end)
  end

  @doc """
  The state in a GenServer callback result.

  ## Examples

      iex> ElixirScope.StateRecorder.state_of({:reply, :ok, %{n: 1}})
      {:ok, %{n: 1}}
      iex> ElixirScope.StateRecorder.state_of(:ignore)
      :error
  """
  @spec state_of(term()) :: {:ok, term()} | :error
  def state_of({:ok, s}), do: {:ok, s}
  def state_of({:ok, s, _}), do: {:ok, s}
  def state_of({:reply, _, s}), do: {:ok, s}
  def state_of({:reply, _, s, _}), do: {:ok, s}
  def state_of({:noreply, s}), do: {:ok, s}
  def state_of({:noreply, s, _}), do: {:ok, s}
  def state_of({:stop, _, s}), do: {:ok, s}
  def state_of({:stop, _, _, s}), do: {:ok, s}
  def state_of(_), do: :error
end
