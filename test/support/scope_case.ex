defmodule ElixirScope.ScopeCase do
  @moduledoc """
  Helpers for tests that capture into a store of their own (so they can run `async: true`):
  a fresh store, tracing a real process into it, and waiting for processes to finish.
  """

  alias ElixirScope.{Query, Store, Tracer}

  @doc "A new private store."
  def new_store(opts \\ []), do: Store.new!(opts)

  @doc "Traces `pid` into `store` with ElixirScope's flags (plus `extra`)."
  def trace_into(pid, store, extra \\ []) do
    :ok = Tracer.trace_pid(pid, store, Tracer.flags() ++ extra)
  end

  @doc "Traces a GenServer-like `pid` into `store` with state capture, as `ElixirScope.trace/2` does."
  def trace_states_into(pid, store) do
    mod = Tracer.state_module(pid) || raise "#{inspect(pid)} is not GenServer-like"
    :ok = Tracer.watch_state_module(mod, store)
    {:ok, _} = Tracer.snapshot_state(pid, store)
    trace_into(pid, store)
  end

  @doc "The current monotonic time in nanoseconds (the clock of events' `ts`)."
  def now, do: System.monotonic_time(:nanosecond)

  @doc "Events of `store` matching `filters`."
  def events(store, filters \\ []), do: Query.events([store: store] ++ filters)

  @doc "A process that waits for `:go`, runs `fun`, and exits normally."
  def spawn_waiting(fun) do
    spawn(fn ->
      receive do
        :go -> fun.()
      end
    end)
  end

  @doc "Sends `:go` to `pid` and waits until it has exited."
  def go_and_wait(pid, timeout \\ 10_000) do
    ref = Process.monitor(pid)
    send(pid, :go)

    receive do
      {:DOWN, ^ref, :process, ^pid, reason} -> reason
    after
      timeout -> raise "process #{inspect(pid)} did not finish in #{timeout} ms"
    end
  end

  @doc "Waits (polling every 5 ms, at most `tries` times) until `fun` returns true."
  def wait_until(fun, tries \\ 400) do
    cond do
      fun.() -> :ok
      tries == 0 -> ExUnit.Assertions.flunk("condition never became true")
      true -> Process.sleep(5) && wait_until(fun, tries - 1)
    end
  end

  @doc "A path under the system's temp dir, unique to the test, removed when the test ends."
  def temp_path(prefix) do
    path = Path.join(System.tmp_dir!(), "#{prefix}-#{System.unique_integer([:positive])}")
    ExUnit.Callbacks.on_exit(fn -> File.rm_rf!(path) end)
    path
  end

  @doc """
  Runs the script file `script` in a BEAM of its own (with this build's code path, `erl_args`
  before it and `args` after it), so that a scenario which could crash the VM crashes that one.
  Returns `{output, exit_status}`.
  """
  def run_beam(erl_args, script, args) do
    ebin = :code.lib_dir(:elixir_scope, :ebin) |> to_string()
    System.cmd("elixir", erl_args ++ ["-pa", ebin, script | args], stderr_to_stdout: true)
  end

  @doc "The path of a scenario script under `test/support/scenarios`."
  def scenario(name), do: Path.expand("scenarios/#{name}.exs", __DIR__)

  @doc "Summarizes events as `{kind, pid, peer, mfa, data}` tuples, for exact comparison."
  def shape(events), do: Enum.map(events, &{&1.kind, &1.pid, &1.peer, &1.mfa, &1.data})
end
