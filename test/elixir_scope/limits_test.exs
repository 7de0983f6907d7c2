defmodule ElixirScope.LimitsTest do
  # Hard caps on a running capture, on real processes: the rate cap trips natively and stops the
  # capture or lowers its level, the time cap stops it, and each is recorded and reported.
  use ExUnit.Case, async: false
  import ElixirScope.ScopeCase

  alias ElixirScope.Query

  doctest ElixirScope.Limits

  setup do
    ElixirScope.stop()
    on_exit(&ElixirScope.stop/0)
  end

  # A process that sends `n` messages to a sink as fast as it can, once told to.
  defp flooder(n) do
    sink = spawn(fn -> Process.sleep(:infinity) end)
    spawn_waiting(fn -> Enum.each(1..n, &send(sink, {:flood, &1})) end)
  end

  # Starts a capture and monitors its server.
  defp start!(opts) do
    {:ok, server} = ElixirScope.start(opts)
    Process.monitor(server)
  end

  defp await_stop(ref) do
    receive do
      {:DOWN, ^ref, :process, _, reason} -> reason
    after
      10_000 -> flunk("the capture did not stop")
    end
  end

  defp control_events, do: Query.events(kind: :control) |> Enum.map(& &1.data)

  test "max_rate stops a flooded capture within the limit, says why, and records it" do
    ref = start!(max_rate: {200, 60_000})
    p = flooder(50_000)
    :ok = ElixirScope.trace(p)
    assert ElixirScope.status().rate_cap == {200, 60_000}
    go_and_wait(p)
    assert await_stop(ref) == :normal

    st = ElixirScope.status()
    refute st.running
    assert st.stopped_by == {:max_rate, {200, 60_000}}
    # The tracer turned itself off at the first event over the cap: the flood is not in the
    # store (one event more per scheduler at most, plus the control event).
    sends = length(Query.events(kind: :send, pid: p))
    assert sends < 200
    assert st.events <= 200 + System.schedulers_online() + 1

    assert [%{event: :limit, limit: :max_rate, value: {200, 60_000}, action: :stop}] =
             control_events()
  end

  test "max_rate counts per window: bursts under it, window after window, never trip it" do
    ref = start!(max_rate: {50, 100})
    sink = spawn(fn -> Process.sleep(:infinity) end)

    p =
      spawn_waiting(fn ->
        for _ <- 1..6 do
          Enum.each(1..30, &send(sink, &1))
          Process.sleep(150)
        end
      end)

    :ok = ElixirScope.trace(p)
    go_and_wait(p)
    refute_received {:DOWN, ^ref, _, _, _}
    st = ElixirScope.status()
    assert st.running and not st.rate_tripped
    assert length(Query.events(kind: :send, pid: p)) == 180
  end

  test "max_rate with on_limit: {:level, l} goes on at the lighter level, and stops on a second trip" do
    ref = start!(max_rate: {300, 60_000}, on_limit: {:level, :minimal})
    :ok = ElixirScope.trace(:new)
    p = flooder(5_000)
    go_and_wait(p)

    wait_until(fn -> ElixirScope.status().tracing_level == :minimal end)
    st = ElixirScope.status()
    assert st.running and not st.rate_tripped
    assert st.limits.tripped == [{:max_rate, {:level, :minimal}}]

    # Lifecycle events only now: a flood of messages costs nothing and trips nothing...
    go_and_wait(flooder(5_000))
    assert ElixirScope.status().running
    # ... but a flood of processes does, and the second trip stops the capture.
    spawner = spawn_waiting(fn -> Enum.each(1..2_000, fn _ -> spawn(fn -> :ok end) end) end)
    go_and_wait(spawner)
    assert await_stop(ref) == :normal
    assert ElixirScope.status().stopped_by == {:max_rate, {300, 60_000}}

    assert [
             %{event: :limit, limit: :max_rate, action: {:level, :minimal}},
             %{event: :limit, limit: :max_rate, action: :stop}
           ] = control_events()
  end

  test "max_time stops the capture once its time is up" do
    started = System.monotonic_time(:millisecond)
    ref = start!(max_time: 300)
    assert ElixirScope.status().limits.max_time == 300
    assert await_stop(ref) == :normal
    assert System.monotonic_time(:millisecond) - started >= 300
    assert ElixirScope.status().stopped_by == {:max_time, 300}
    assert [%{event: :limit, limit: :max_time, value: 300, action: :stop}] = control_events()
  end

  test "max_time with a fallback level lowers the level and goes on" do
    _ = start!(max_time: 100, on_limit: {:level, :states_only})
    wait_until(fn -> ElixirScope.status().tracing_level == :states_only end)
    assert ElixirScope.status().running
  end

  test "a new capture forgets why the last one stopped" do
    ref = start!(max_time: 50)
    await_stop(ref)
    assert ElixirScope.status().stopped_by == {:max_time, 50}
    _ = start!([])
    ElixirScope.stop()
    assert ElixirScope.status().stopped_by == nil
  end

  test "bad limits are refused with what is allowed" do
    for {opts, msg} <- [
          {[max_rate: {0, 1000}], ~r/invalid :max_rate .*positive integers/},
          {[max_rate: {10, 0}], ~r/invalid :max_rate/},
          {[max_time: -1], ~r/invalid :max_time -1, expected a positive integer/},
          {[on_limit: :ignore], ~r/invalid :on_limit :ignore/},
          {[on_limit: {:level, :off}], ~r/invalid :on_limit/},
          {[on_limit: {:level, :bogus}], ~r/invalid :tracing_level :bogus/}
        ] do
      assert_raise ArgumentError, msg, fn -> ElixirScope.start(opts) end
    end

    refute ElixirScope.running?()
  end
end
