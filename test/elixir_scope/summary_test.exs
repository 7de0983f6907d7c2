defmodule ElixirScope.SummaryTest do
  # Summaries in words: each sentence's numbers checked against the queries they come from.
  use ExUnit.Case, async: false
  @moduletag :capture_log

  alias ElixirScope.Query
  alias ElixirScope.Query.Aggregate

  doctest ElixirScope.Query.Summary

  defmodule Repo do
    def get(_table, id), do: Process.sleep(1) && %{id: id}
  end

  defmodule Counter do
    use GenServer
    def start_link(_), do: GenServer.start_link(__MODULE__, 0, name: __MODULE__)
    def init(n), do: {:ok, %{count: n, label: "c"}}

    def handle_call({:increment, k}, _from, s) do
      Repo.get(:t, k)
      {:reply, :ok, %{s | count: s.count + k}}
    end

    def handle_call(:same, _from, s), do: {:reply, :ok, s}
    def handle_call(:boom, _from, _s), do: raise(ArgumentError, "boom")
    def handle_info({:status_update, _}, s), do: {:noreply, s}
  end

  setup do
    ElixirScope.stop()
    {:ok, _} = ElixirScope.start()
    {:ok, sup} = Supervisor.start_link([Counter], strategy: :one_for_one, name: :summary_sup)
    Process.unlink(sup)
    :ok = ElixirScope.trace(sup)
    counter = Process.whereis(Counter)
    :ok = ElixirScope.trace(counter)
    :ok = ElixirScope.trace(Repo, as: :module)
    for k <- [1, 2, 3], do: :ok = GenServer.call(Counter, {:increment, k})
    :ok = GenServer.call(Counter, :same)
    send(Counter, {:status_update, 1})
    send(Counter, {:status_update, 2})
    ref = Process.monitor(counter)
    catch_exit(GenServer.call(Counter, :boom))
    assert_receive {:DOWN, ^ref, _, _, _}
    ElixirScope.ScopeCase.wait_until(fn -> Process.whereis(Counter) not in [nil, counter] end)

    on_exit(fn ->
      ElixirScope.stop()
      Process.exit(sup, :kill)
    end)

    %{counter: counter, sup: sup}
  end

  test "a process: its state changes, numbers, messages, calls and crash", %{counter: counter} do
    text = Query.summarize(counter)
    states = Query.state_timeline(counter, changes_only: true)
    changes = length(states) - 1
    assert changes == 3

    assert text =~
             "#{inspect(Counter)} (#{inspect(counter)}) had #{changes} state changes between "

    [first | _] = Query.events(pid: counter, kind: :state)
    last = List.last(Query.events(pid: counter, kind: :state))
    assert text =~ ":count increased from #{first.data.count} to #{last.data.count}."

    tags = Query.top([pid: counter, kind: :receive], :tag, 5) |> Map.new()
    assert text =~ "#{tags[:"$gen_call"]} calls"
    assert text =~ "#{tags[:status_update]} {:status_update, _}"

    repo = Aggregate.durations([pid: counter], :mfa)[{Repo, :get, 2}]
    assert repo.count == 3

    assert text =~
             "ElixirScope.SummaryTest.Repo.get/2 3 times (max #{ElixirScope.Format.duration(repo.max)})"

    assert text =~ "It crashed once: ArgumentError in handle_call/3, restarted by :summary_sup."
  end

  test "a struct state's numeric fields" do
    {:ok, agent} = Agent.start(fn -> %URI{port: 1} end)
    :ok = ElixirScope.trace(agent)
    Agent.update(agent, &%{&1 | port: 2})
    assert Query.summarize(agent) =~ ":port increased from 1 to 2."
  end

  test "a window, and the whole capture", %{counter: counter} do
    [_, _, third | _] = Query.events(pid: counter, kind: :state)
    text = Query.summarize(counter, {third.ts, third.ts})
    # Only the third state in the window: its start, no change within it.
    assert text =~ "had no state changes recorded."

    all = Query.summarize(:all)
    total = Aggregate.count([])
    processes = Aggregate.group_by([], :pid) |> Map.delete(nil) |> map_size()
    assert all =~ "#{total} events of #{processes} processes between "
    assert all =~ "1 process crashed: #{inspect(Counter)}."

    assert_raise ArgumentError, ~r/invalid window/, fn -> Query.summarize(counter, :yesterday) end
  end
end
