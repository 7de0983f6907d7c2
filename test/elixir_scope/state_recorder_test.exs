defmodule ElixirScope.StateRecorderTest do
  use ExUnit.Case, async: false

  alias ElixirScope.{Query, StateRecorder}

  doctest StateRecorder

  defmodule Recorded do
    use GenServer
    use ElixirScope.StateRecorder
    def init(n), do: {:ok, n}
    def handle_call(:inc, _from, n), do: {:reply, n + 1, n + 1}
    def handle_cast({:set, n}, _), do: {:noreply, n}
  end

  setup do
    ElixirScope.stop()
    on_exit(&ElixirScope.stop/0)
  end

  test "an untraced process records its states itself while a capture runs" do
    {:ok, _} = ElixirScope.start()
    {:ok, pid} = GenServer.start(Recorded, 10)
    11 = GenServer.call(pid, :inc)
    GenServer.cast(pid, {:set, 5})
    6 = GenServer.call(pid, :inc)
    states = Query.state_timeline(pid)
    assert Enum.map(states, & &1.data) == [10, 11, 5, 6]

    assert Enum.map(states, & &1.mfa) |> Enum.uniq() |> Enum.sort() ==
             [{Recorded, :handle_call, 3}, {Recorded, :handle_cast, 2}, {Recorded, :init, 1}]

    # The process itself was never traced.
    assert :erlang.trace_info(pid, :tracer) == {:tracer, []}
    assert Query.events(pid: pid, kind: [:send, :receive]) == []
  end

  test "without a capture it records nothing and changes nothing" do
    {:ok, pid} = GenServer.start(Recorded, 1)
    assert GenServer.call(pid, :inc) == 2
    refute ElixirScope.running?()
    {:ok, _} = ElixirScope.start()
    assert Query.state_timeline(pid) == []
    assert GenServer.call(pid, :inc) == 3
    assert Enum.map(Query.state_timeline(pid), & &1.data) == [3]
  end

  test "a process traced with state capture is not recorded twice" do
    {:ok, _} = ElixirScope.start()
    {:ok, pid} = GenServer.start(Recorded, 1)
    :ok = ElixirScope.trace(pid)
    2 = GenServer.call(pid, :inc)
    # init/1 recorded by the module itself (not traced yet), the snapshot taken when tracing
    # started, then the traced callback's state, which the module no longer records itself.
    assert Enum.map(Query.state_timeline(pid, changes_only: false), & &1.mfa) ==
             [{Recorded, :init, 1}, {:sys, :get_state, 2}, {Recorded, :handle_call, 3}]
  end
end
