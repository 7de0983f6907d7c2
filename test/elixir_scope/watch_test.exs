defmodule ElixirScope.WatchTest do
  # ElixirScope.watch on real processes: each limit stops it with its reason, what it printed
  # is in the store, patterns are parsed without atoms and dangerous ones refused.
  use ExUnit.Case, async: false
  import ElixirScope.ScopeCase

  alias ElixirScope.Query

  doctest ElixirScope.Watch.Pattern

  defmodule Repo do
    def get(_table, id), do: {:ok, id}
    def fail(id), do: raise(ArgumentError, "no #{id}")
    def fetch(id), do: lookup(id)
    defp lookup(id), do: {:found, id}
  end

  defmodule Caller do
    # Non-tail calls: each frame stays on the stack.
    def outer(id), do: {:outer, inner(id)}
    def inner(id), do: {:inner, Repo.get(:t, id)}
  end

  defmodule Bank do
    use GenServer
    def init(n), do: {:ok, n}
    def handle_cast({:deposit, n}, total), do: {:noreply, total + n}
    def handle_call(:balance, _from, total), do: {:reply, total, total}
    def handle_info({:deposit, n}, total), do: {:noreply, total + n}
  end

  setup do
    ElixirScope.unwatch()
    ElixirScope.stop()
    {:ok, io} = StringIO.open("")

    on_exit(fn ->
      ElixirScope.unwatch()
      ElixirScope.stop()
    end)

    %{io: io}
  end

  # Starts a watch and monitors it.
  defp watch!(args) do
    {:ok, w} = apply(ElixirScope, :watch, args)
    {w, Process.monitor(w)}
  end

  defp await({w, ref}) do
    receive do
      {:DOWN, ^ref, :process, ^w, reason} -> reason
    after
      10_000 -> flunk("the watch did not stop")
    end
  end

  defp lines(io) do
    {_, out} = StringIO.contents(io)

    out
    |> String.split("\n", trim: true)
    |> Enum.map(&String.replace_prefix(&1, "[ElixirScope.watch] ", ""))
  end

  defp run(fun), do: go_and_wait(spawn_waiting(fun))

  test "a count limit prints that many matches, stops, says why, and what it printed is in the store",
       %{io: io} do
    w = watch!(["#{inspect(Repo)}.get(_, id) when id > 10", [limit: 3, io: io]])
    caller = spawn_waiting(fn -> Enum.each(1..20, &Repo.get(:users, &1)) end)
    go_and_wait(caller)
    assert await(w) == {:shutdown, {:count, 3}}

    [first | rest] = lines(io)
    assert first =~ "watching calls of #{inspect(Repo)}.get/2 matching (_, id) when id > 10"
    assert first =~ "stops after 3 calls"
    {calls, [last]} = Enum.split(rest, 3)

    for {line, id} <- Enum.zip(calls, 11..13) do
      assert line =~ ~r/^\+\d+\.\d{3}s #{Regex.escape(inspect(caller))} /
      assert String.ends_with?(line, "#{inspect(Repo)}.get(:users, #{id})")
    end

    assert last == "stopped after 3 calls: the limit of 3"

    # The watch started a capture and stopped it; its events stay queryable.
    refute ElixirScope.running?()

    ids =
      Query.find(mfa: {Repo, :get, 2}, args: "[_, id] when id > 10", select: :binds)
      |> Enum.map(& &1["id"])

    assert Enum.take(ids, 3) == [11, 12, 13]

    assert [%{event: :watch_started}, %{event: :watch_stopped, why: {:count, 3}, printed: 3}] =
             Query.events(kind: :control) |> Enum.map(& &1.data)
  end

  test "with return: true, the count's last call has its return printed before the watch stops",
       %{io: io} do
    w = watch!(["#{inspect(Repo)}.get(_, id) when id > 10", [limit: 2, return: true, io: io]])
    run(fn -> Enum.each(1..20, &Repo.get(:t, &1)) end)
    assert await(w) == {:shutdown, {:count, 2}}
    out = lines(io) |> Enum.map(&String.replace(&1, ~r/^\+\S+ \S+ /, ""))
    repo = inspect(Repo)

    assert Enum.drop(out, 1) == [
             "#{repo}.get(:t, 11)",
             "#{repo}.get/2 -> {:ok, 11}",
             "#{repo}.get(:t, 12)",
             "#{repo}.get/2 -> {:ok, 12}",
             "stopped after 2 calls: the limit of 2"
           ]
  end

  test "stack: true prints each printed call's callers, innermost first, and keeps them", %{
    io: io
  } do
    w = watch!(["#{inspect(Repo)}.get(_, id) when id == 2", [stack: true, limit: 1, io: io]])
    run(fn -> Enum.each(1..3, &Caller.outer/1) end)
    assert await(w) == {:shutdown, {:count, 1}}
    caller = inspect(Caller)
    [_, call, callers | _] = lines(io)
    assert String.ends_with?(call, ".get(:t, 2)")
    pid = call |> String.split(" ") |> Enum.at(1)

    assert String.starts_with?(
             callers,
             "    callers of #{pid}: #{caller}.inner/1 < #{caller}.outer/1 < anonymous fn/3 in Enum.each/2"
           )

    # In the store: the callers of each call of the function (the third call may come after
    # the capture stopped), each naming its call.
    [two] = Query.find(kind: :call, mfa: {Repo, :get, 2}, args: "[_, 2]") |> Enum.map(& &1.event)
    stacks = Query.events(kind: :stack)
    assert length(stacks) >= 2

    assert {_, [_ | _] = frames} =
             Enum.find_value(stacks, &(elem(&1.data, 0) == two.seq && &1.data))

    assert Enum.take(frames, 2) == ["'Elixir.#{caller}':inner/1", "'Elixir.#{caller}':outer/1"]
  end

  test "a stack watch's process dumps end with it; another watch keeps its own pattern", %{io: io} do
    {:ok, io2} = StringIO.open("")
    plain = watch!(["#{inspect(Repo)}.get/2", [limit: 100, io: io]])
    stack = watch!(["#{inspect(Repo)}.get/2", [stack: true, limit: 100, io: io2]])
    dump = [{:_, [], [{:message, {:process_dump}}]}]
    assert :erlang.trace_info({Repo, :get, 2}, :match_spec) == {:match_spec, dump}
    ElixirScope.unwatch(elem(stack, 0))
    await(stack)

    assert :erlang.trace_info({Repo, :get, 2}, :match_spec) ==
             {:match_spec, [{:_, [], [{:message, true}]}]}

    ElixirScope.unwatch(elem(plain, 0))
    await(plain)
  end

  test "a rate limit stops at the first match over it, having printed n", %{io: io} do
    w = watch!(["#{inspect(Repo)}.get/2", [limit: {5, 60_000}, io: io]])
    run(fn -> Enum.each(1..50, &Repo.get(:t, &1)) end)
    assert await(w) == {:shutdown, {:rate, {5, 60_000}}}
    out = lines(io)
    assert length(Enum.filter(out, &(&1 =~ ".get(:t, "))) == 5
    assert List.last(out) == "stopped after 5 calls: more than 5 calls in 60000 ms"
  end

  test "matches spaced wider than the rate's window never trip it", %{io: io} do
    w = watch!(["#{inspect(Repo)}.get/2", [limit: {1, 40}, io: io]])
    run(fn -> Enum.each(1..4, fn i -> Repo.get(:t, i) && Process.sleep(60) end) end)
    :ok = ElixirScope.unwatch(elem(w, 0))
    assert await(w) == {:shutdown, :unwatch}
    assert List.last(lines(io)) == "stopped after 4 calls: unwatched"
  end

  test "a time limit stops it, printing what came before", %{io: io} do
    started = System.monotonic_time(:millisecond)
    w = watch!(["#{inspect(Repo)}.get", [time: 300, limit: 100, io: io]])
    run(fn -> Repo.get(:t, 1) end)
    assert await(w) == {:shutdown, {:time, 300}}
    assert System.monotonic_time(:millisecond) - started >= 300
    out = lines(io)
    assert Enum.any?(out, &String.ends_with?(&1, ".get(:t, 1)"))
    assert List.last(out) == "stopped after 1 calls: 300 ms passed"
  end

  test "return: true prints the return values and exceptions of printed calls, local calls included",
       %{io: io} do
    w = watch!(["#{inspect(Repo)}", [return: true, limit: 100, io: io]])

    run(fn ->
      Repo.fetch(7)

      try do
        Repo.fail(3)
      rescue
        ArgumentError -> :ok
      end
    end)

    ElixirScope.unwatch(elem(w, 0))
    await(w)
    out = lines(io) |> Enum.map(&String.replace(&1, ~r/^\+\S+ \S+ /, ""))
    repo = inspect(Repo)

    assert [
             "#{repo}.fetch(7)",
             "#{repo}.lookup(7)",
             "#{repo}.lookup/1 -> {:found, 7}",
             "#{repo}.fetch/1 -> {:found, 7}",
             "#{repo}.fail(3)",
             "#{repo}.fail/1 raised ** (ArgumentError) no 3"
           ] == Enum.slice(out, 1, 6)
  end

  test "messages of a named process, GenServer requests matched by their payload", %{io: io} do
    {:ok, bank} = GenServer.start(Bank, 0, name: :watch_test_bank)
    w = watch!([:watch_test_bank, "{:deposit, n} when n > 100", [limit: 3, io: io]])
    GenServer.cast(bank, {:deposit, 50})
    GenServer.cast(bank, {:deposit, 150})
    send(bank, {:deposit, 200})
    send(bank, {:deposit, 20})
    GenServer.cast(bank, {:deposit, 300})
    GenServer.cast(bank, {:deposit, 400})
    assert GenServer.call(bank, :balance) == 1120
    assert await(w) == {:shutdown, {:count, 3}}
    out = lines(io)

    assert hd(out) =~
             "watching messages matching {:deposit, n} when n > 100 of #{inspect(bank)} (:watch_test_bank)"

    received = Enum.filter(out, &(&1 =~ "<- "))
    assert length(received) == 3
    assert Enum.at(received, 0) =~ "(:watch_test_bank) <- {:\"$gen_cast\", {:deposit, 150}}"
    assert Enum.at(received, 1) =~ "<- {:deposit, 200}"
    assert Enum.at(received, 2) =~ "<- {:\"$gen_cast\", {:deposit, 300}}"
    GenServer.stop(bank)
  end

  test "a watch outrun by a ring's evictions says so", %{io: io} do
    {:ok, _} = ElixirScope.start(overflow: :evict_oldest, max_events: 8 * 64)
    # It receives (a process asleep takes in no message, so none is traced).
    sink = spawn(fn -> Stream.repeatedly(fn -> receive(do: (m -> m)) end) |> Stream.run() end)
    w = watch!([sink, "{:n, i} when i > 0", [limit: 1_000_000, io: io]])
    run(fn -> Enum.each(1..50_000, &send(sink, {:n, &1})) end)

    wait_until(fn -> Enum.any?(lines(io), &(&1 =~ "evicted before this watch looked at them")) end)

    ElixirScope.unwatch(elem(w, 0))
    assert await(w) == {:shutdown, :unwatch}
  end

  test "inside a running capture: its events land there, the capture goes on, patterns are cleared",
       %{io: io} do
    {:ok, _} = ElixirScope.start()
    w = watch!(["#{inspect(Repo)}.get/2", [limit: 2, io: io]])
    assert {:all, [_ | _]} = :erlang.trace_info({Repo, :get, 2}, :all)
    run(fn -> Enum.each(1..5, &Repo.get(:t, &1)) end)
    assert await(w) == {:shutdown, {:count, 2}}
    assert ElixirScope.running?()
    assert length(Query.events(kind: :call, mfa: {Repo, :get, 2})) >= 2
    wait_until(fn -> :erlang.trace_info({Repo, :get, 2}, :traced) == {:traced, false} end)
    # The watch's own process was never traced: nothing of it but its control events.
    assert Query.events(pid: elem(w, 0)) |> Enum.map(& &1.kind) == [:control, :control]
  end

  test "stopping the capture stops the watch, saying so", %{io: io} do
    w = watch!(["#{inspect(Repo)}.get/2", [io: io]])
    ElixirScope.stop()
    assert await(w) == {:shutdown, {:capture_stopped, nil}}
    assert List.last(lines(io)) == "stopped after 0 calls: the capture stopped"
    # The capture cleared the watch's patterns as it stopped.
    assert :erlang.trace_info({Repo, :get, 2}, :traced) == {:traced, false}
  end

  test "the capture's own limit stops the watch, saying which", %{io: io} do
    {:ok, _} = ElixirScope.start(max_rate: {50, 60_000})
    w = watch!(["#{inspect(Repo)}.get/2", [limit: 1_000, io: io]])
    run(fn -> Enum.each(1..500, &Repo.get(:t, &1)) end)
    assert await(w) == {:shutdown, {:capture_stopped, {:max_rate, {50, 60_000}}}}

    assert List.last(lines(io)) =~
             ~r/stopped after \d+ calls: the capture stopped: more than 50 events in 60000 ms/
  end

  test "another tool's pattern is left alone, and the capture it started is stopped", %{io: io} do
    :erlang.trace_pattern({Repo, :get, 2}, [{:_, [], [{:message, :other_tool}]}], [:local])
    on_exit(fn -> :erlang.trace_pattern({Repo, :get, 2}, false, [:local]) end)

    assert ElixirScope.watch("#{inspect(Repo)}.get/2", io: io) ==
             {:error, {:pattern_in_use, [{Repo, :get, 2}]}}

    refute ElixirScope.running?()
    assert ElixirScope.Watch.running() == []
  end

  test "bad and dangerous patterns are refused with the reason, creating no atom", %{io: io} do
    for {pattern, msg} <- [
          {"IO.puts(x)", ~r/refused pattern "IO.puts\(x\)": IO prints the watch's own lines/},
          {":io_lib.format/2", ~r/refused pattern/},
          {":erlang.send/2", ~r/refused pattern ":erlang.send\/2": :erlang is the VM's/},
          {"Enum", ~r/every function of Enum at once/},
          {":lists", ~r/every function of :lists at once/},
          {"ElixirScope.Query.events/1", ~r/ElixirScope's own/},
          {"Zzq.Nope.fun(x)", ~r/unknown/},
          {"#{inspect(Repo)}.nope/3", ~r/unknown function/},
          {"#{inspect(Repo)}.get/3", ~r/unknown function .*get\/3/},
          {"#{inspect(Repo)}.get(_, id) when", ~r/invalid query pattern/},
          {"#{inspect(Repo)}.get when true", ~r/a guard needs the arguments/},
          {"1 + 2", ~r/invalid call pattern/}
        ] do
      assert_raise ArgumentError, msg, fn -> ElixirScope.watch(pattern, io: io) end
    end

    n = :erlang.system_info(:atom_count)

    assert_raise ArgumentError, fn ->
      ElixirScope.watch("Zzq.Wxq.fresh_fun_zz(aaa_qq, bbb_qq) when aaa_qq > bbb_qq", io: io)
    end

    dead = spawn(fn -> :ok end)
    ref = Process.monitor(dead)
    assert_receive {:DOWN, ^ref, _, _, _}

    assert ElixirScope.watch(dead, "{:zz_fresh_tag_q, v} when v > 1", io: io) ==
             {:error, {:dead_process, dead}}

    assert :erlang.system_info(:atom_count) == n
    refute ElixirScope.running?()
  end

  test "watches of the same function share its pattern; a watch's end leaves the others watching",
       %{io: io} do
    {:ok, io2} = StringIO.open("")
    a = watch!(["#{inspect(Repo)}.get/2", [limit: 100, io: io]])
    b = watch!(["#{inspect(Repo)}.get(_, 2)", [limit: 100, io: io2]])
    # Without return: true, no return trace (it would cost every call, and keep the frames of
    # a tail-recursive loop).
    assert :erlang.trace_info({Repo, :get, 2}, :match_spec) ==
             {:match_spec, [{:_, [], [{:message, true}]}]}

    ElixirScope.unwatch(elem(a, 0))
    assert await(a) == {:shutdown, :unwatch}
    # The capture the first watch started goes on while the second one runs.
    assert ElixirScope.running?()
    run(fn -> Enum.each(1..3, &Repo.get(:t, &1)) end)
    ElixirScope.unwatch(elem(b, 0))
    assert await(b) == {:shutdown, :unwatch}
    assert Enum.any?(lines(io2), &String.ends_with?(&1, ".get(:t, 2)"))
    # The last one gone, so is the capture, and the pattern.
    refute ElixirScope.running?()
    assert :erlang.trace_info({Repo, :get, 2}, :traced) == {:traced, false}
  end

  test "ElixirScope's own processes cannot be watched, and unwatch/1 only stops watches", %{
    io: io
  } do
    {:ok, server} = ElixirScope.start()

    assert ElixirScope.watch(server, "_", io: io) ==
             {:error,
              {:refused, server, "ElixirScope's own process: watching it would trace the tracer"}}

    assert ElixirScope.unwatch(server) == :ok
    assert ElixirScope.running?()
  end

  test "bad options are refused with what is allowed", %{io: io} do
    pattern = "#{inspect(Repo)}.get/2"

    for {opts, msg} <- [
          {[limit: 0], ~r/invalid :limit 0, expected a positive integer/},
          {[limit: {0, 10}], ~r/invalid :limit \{0, 10\}/},
          {[limit: 5, count: 3], ~r/not both/},
          {[time: :forever], ~r/invalid :time :forever/},
          {[return: 1], ~r/invalid :return/},
          {[bogus: 1], ~r/unknown option :bogus/}
        ] do
      assert_raise ArgumentError, msg, fn -> ElixirScope.watch(pattern, [io: io] ++ opts) end
    end

    assert ElixirScope.watch(:no_such_name_registered, "_", io: io) ==
             {:error, {:unknown_target, :no_such_name_registered}}
  end
end
