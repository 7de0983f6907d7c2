defmodule ElixirScope.ReplayTest do
  use ExUnit.Case, async: true
  import ElixirScope.ScopeCase

  alias ElixirScope.{Query, Replay}

  doctest Replay

  defmodule Box do
    use GenServer
    def init(v), do: {:ok, v}
    def handle_call({:put, v}, _from, _old), do: {:reply, :ok, v}
    def handle_call(:get, _from, v), do: {:reply, v, v}
  end

  setup do
    store = new_store()
    {:ok, pid} = GenServer.start(Box, :empty)
    trace_states_into(pid, store)
    :ok = GenServer.call(pid, {:put, :a})
    :ok = GenServer.call(pid, {:put, :b})
    :b = GenServer.call(pid, :get)
    %{store: store, pid: pid}
  end

  test "steps forward and back over the events that match its filters", %{store: store, pid: pid} do
    {:ok, r} = Replay.open(:start, store: store, pid: pid, kind: :state)
    assert Replay.event(r).data == :empty
    {:ok, r} = Replay.next(r)
    assert Replay.event(r).data == :a
    {:ok, r2} = Replay.next(r)
    assert Replay.event(r2).data == :b
    # Cursors are values: r still points at :a.
    assert Replay.event(r).data == :a
    {:ok, back} = Replay.prev(r2)
    assert Replay.event(back) == Replay.event(r)
    {:ok, r3} = Replay.next(r2)
    assert {:error, :end} = Replay.next(r3)
    {:ok, first} = Replay.open(:start, store: store, pid: pid, kind: :state)
    assert {:error, :start} = Replay.prev(first)
  end

  test "view shows the states, mailboxes and calls of the processes involved", %{
    store: store,
    pid: pid
  } do
    {:ok, r} = Replay.open(:start, store: store, pid: pid)
    {:ok, r} = Replay.step_until(r, kind: :call)
    %{event: e, processes: %{^pid => p}} = Replay.view(r)
    assert e.mfa == {Box, :handle_call, 3}
    assert [%{mfa: {Box, :handle_call, 3}}] = p.calls
    assert p.state == :empty
    assert {:ok, []} = p.pending
    text = Replay.format(r)
    assert text =~ "handle_call"
    assert text =~ "state:   :empty"
    assert inspect(r) =~ "#ElixirScope.Replay<at #"
  end

  test "jump goes to the last event at or before a point", %{store: store, pid: pid} do
    states = Query.state_timeline(pid, store: store)
    second = Enum.at(states, 1)
    {:ok, r} = Replay.open(:start, store: store, pid: pid)
    {:ok, r} = Replay.jump(r, second)
    assert Replay.event(r).seq == second.seq
    {:ok, r} = Replay.jump(r, {:seq, 0})
    assert Replay.event(r).seq == hd(Query.events(store: store, pid: pid)).seq
    {:ok, last} = Replay.open(:now, store: store, pid: pid)
    assert Replay.event(last).seq == List.last(Query.events(store: store, pid: pid)).seq
    assert {:error, :end} = Replay.step_until(last, kind: :state)
  end

  test "step_until stays among the cursor's own events", %{store: store, pid: pid} do
    {:ok, r} = Replay.open(:start, store: store, pid: pid, kind: :state)
    {:ok, hit} = Replay.step_until(r, data: &(&1 == :b))
    assert %{kind: :state, data: :b} = Replay.event(hit)
    # No :call among the cursor's (:state) events.
    assert {:error, :end} = Replay.step_until(r, kind: :call)
  end

  test "step_until takes mfa patterns with wildcards, as Query.events does",
       %{store: store, pid: pid} do
    {:ok, r} = Replay.open(:start, store: store, pid: pid)
    {:ok, exact} = Replay.step_until(r, mfa: {Box, :handle_call, 3})

    for pattern <- [{Box, :_, 3}, {Box, :handle_call, :_}, {Box, :handle_call}, Box] do
      assert {:ok, hit} = Replay.step_until(r, kind: [:call, :return], mfa: pattern)
      assert Replay.event(hit).seq == Replay.event(exact).seq, inspect(pattern)
    end

    assert {:error, :end} = Replay.step_until(r, mfa: {Box, :_, 7})
  end

  test "bad options are refused", %{store: store} do
    assert_raise ArgumentError, ~r/does not take :limit/, fn ->
      Replay.open(:start, store: store, limit: 3)
    end
  end
end
