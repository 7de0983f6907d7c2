defmodule ElixirScope.SemanticsTest do
  # Answers that used to be quietly wrong (issue 12), on the facade's one global capture: these
  # tests run one at a time.
  use ExUnit.Case, async: false

  alias ElixirScope.Query
  import Bitwise
  import ElixirScope.ScopeCase, only: [wait_until: 1]

  setup do
    ElixirScope.stop()
    {:ok, _} = ElixirScope.start()
    on_exit(&ElixirScope.stop/0)
  end

  defmodule Helper do
    def twice(x), do: 2 * x
  end

  defmodule Counter do
    use GenServer
    def start_link(n), do: GenServer.start_link(__MODULE__, n)
    def init(n), do: {:ok, n}
    def handle_cast(:inc, n), do: {:noreply, n + 1}
    def handle_call(:get, _from, n), do: {:reply, n, n}

    def handle_call({:sleep, ms}, _from, n) do
      Process.sleep(ms)
      {:reply, :slept, n}
    end

    def handle_info(_msg, n), do: {:noreply, n}
  end

  defp states(pid), do: Enum.map(Query.state_timeline(pid), & &1.data)

  describe "states whatever way a process came to be traced" do
    test "a module traced first, then the process" do
      {:ok, agent} = Agent.start_link(fn -> 1 end)
      {:ok, sup} = Supervisor.start_link([], strategy: :one_for_one)
      :ok = ElixirScope.trace(Helper)
      :ok = ElixirScope.trace(agent)
      :ok = ElixirScope.trace(sup)
      Agent.update(agent, &(&1 + 1))
      wait_until(fn -> Query.state_at(agent, :now) == {:ok, 2} end)
      # The snapshot taken when it was traced, then the update.
      assert states(agent) == [1, 2]
      assert [%{pid: ^sup}] = Query.supervision_tree_at(:now)
    end

    test "a snapshot never lands after a newer state (a busy server, its callbacks traced)" do
      :ok = ElixirScope.trace(Counter)

      for _ <- 1..30 do
        {:ok, server} = Counter.start_link(0)
        spawn(fn -> for _ <- 1..2_000, do: GenServer.cast(server, :inc) end)
        :ok = ElixirScope.trace(server)
        wait_until(fn -> :sys.get_state(server) == 2_000 end)
        seen = states(server)
        # Recorded in the order the server had them: never a step back.
        assert seen == Enum.sort(seen), inspect(Enum.take(seen, 20))
        assert List.last(seen) == 2_000
        GenServer.stop(server)
      end
    end

    test "processes started after trace(:new): GenServers, agents, supervisors" do
      :ok = ElixirScope.trace(:new)
      {:ok, counter} = Counter.start_link(10)
      {:ok, agent} = Agent.start_link(fn -> :a end)
      {:ok, sup} = Supervisor.start_link([{Agent, fn -> 0 end}], strategy: :one_for_one)
      GenServer.cast(counter, :inc)
      GenServer.cast(counter, :inc)
      Agent.update(agent, fn _ -> :b end)
      wait_until(fn -> Query.state_at(counter, :now) == {:ok, 12} end)
      wait_until(fn -> Query.state_at(agent, :now) == {:ok, :b} end)
      # The first process of a module not watched yet: states from a snapshot taken as soon as
      # the module is watched (the callbacks before it are in that snapshot), then every one.
      seen = states(counter)

      assert List.last(seen) == 12 and seen == Enum.sort(seen) and
               Enum.all?(seen, &(&1 in 10..12))

      # The next process of the module has every state from its init/1 on.
      {:ok, second} = Counter.start_link(20)
      GenServer.cast(second, :inc)
      wait_until(fn -> Query.state_at(second, :now) == {:ok, 21} end)
      assert [20, 21] = second |> states() |> Enum.dedup()
      wait_until(fn -> Query.supervision_tree_at(:now) |> Enum.any?(&(&1.pid == sup)) end)
      GenServer.stop(counter)
    end

    test "children of a traced process that start GenServers" do
      parent = self()

      starter =
        spawn(fn ->
          receive do
            :go ->
              {:ok, c} = Counter.start_link(0)
              send(parent, {:counter, c})
              Process.sleep(:infinity)
          end
        end)

      :ok = ElixirScope.trace(starter)
      send(starter, :go)
      assert_receive {:counter, counter}
      GenServer.cast(counter, :inc)
      wait_until(fn -> Query.state_at(counter, :now) == {:ok, 1} end)
      Process.exit(starter, :kill)
    end

    test "processes running when trace(:all) is called" do
      {:ok, agent} = Agent.start_link(fn -> %{n: 0} end)
      :ok = ElixirScope.trace(:all)
      # The snapshot taken when tracing started.
      assert {:ok, %{n: 0}} = Query.state_at(agent, :now)
      Agent.update(agent, &%{&1 | n: 1})
      wait_until(fn -> Query.state_at(agent, :now) == {:ok, %{n: 1}} end)
      :ok = ElixirScope.untrace(:all)
    end

    test "states: false still records none" do
      :ok = ElixirScope.trace(:new, states: false)
      {:ok, agent} = Agent.start_link(fn -> 0 end)
      Agent.update(agent, &(&1 + 1))
      Process.sleep(20)
      assert Query.state_timeline(agent) == []
    end
  end

  describe "receive ... after" do
    test "a timeout is a :timeout event, never a received or pending message" do
      parent = self()

      pid =
        spawn(fn ->
          receive do
            :go -> :ok
          end

          Process.sleep(5)

          receive do
            :never -> :ok
          after
            5 -> :ok
          end

          receive do
            msg -> send(parent, {:got, msg})
          end

          Process.sleep(:infinity)
        end)

      :ok = ElixirScope.trace(pid)
      send(pid, :go)
      send(pid, :timeout)
      assert_receive {:got, :timeout}
      kinds = pid |> Query.timeline() |> Enum.map(& &1.kind)
      # :go and the real :timeout message are received; the sleep and the after clause are
      # timeouts.
      assert Enum.count(kinds, &(&1 == :receive)) == 2
      assert Enum.count(kinds, &(&1 == :timeout)) == 2
      assert [:go, :timeout] = pid |> Query.messages_to() |> Enum.map(& &1.data)
      # A plain process: consumption unknown, so every arrival is listed; no timeout among them.
      assert {:unknown, arrived} = Query.pending_messages_at(pid, :now)
      assert [:go, :timeout] = Enum.map(arrived, & &1.data)
      Process.exit(pid, :kill)
    end

    test "the receive pattern is ElixirScope's only while it runs, and another tool's is kept" do
      assert {:match_spec, [_, _]} = :erlang.trace_info(:receive, :match_spec)
      ElixirScope.stop()
      assert :erlang.trace_info(:receive, :match_spec) == {:match_spec, true}
      :erlang.trace_pattern(:receive, [{:_, [], [true]}], [])
      {:ok, _} = ElixirScope.start()
      assert :erlang.trace_info(:receive, :match_spec) == {:match_spec, [{:_, [], [true]}]}
      ElixirScope.stop()
      assert :erlang.trace_info(:receive, :match_spec) == {:match_spec, [{:_, [], [true]}]}
      :erlang.trace_pattern(:receive, true, [])
    end
  end

  describe "mailboxes" do
    test "messages sent during a long callback are pending from their send" do
      {:ok, server} = Counter.start_link(0)
      :ok = ElixirScope.trace(server)
      :ok = ElixirScope.trace(self())
      caller = Task.async(fn -> GenServer.call(server, {:sleep, 200}) end)
      Process.sleep(30)
      GenServer.cast(server, :inc)
      send(server, :hello)
      Process.sleep(30)
      mid = System.monotonic_time(:nanosecond)
      {:messages, in_mailbox} = Process.info(server, :messages)
      assert {:"$gen_cast", :inc} in in_mailbox and :hello in in_mailbox
      assert :slept = Task.await(caller)
      wait_until(fn -> Query.state_at(server, :now) == {:ok, 1} end)

      assert {:ok, pending} = Query.pending_messages_at(server, mid)
      assert [{:"$gen_cast", :inc}, :hello] = Enum.map(pending, & &1.data)
      assert Enum.all?(pending, &(&1.kind == :send and &1.pid == self()))
      # Each send is paired with the receive in which the server took it, after the callback.
      for send_event <- pending do
        assert {:ok, %{kind: :receive, pid: ^server} = recv} = Query.paired(send_event)
        assert recv.ts > mid and recv.data == send_event.data
        assert {:ok, ^send_event} = Query.paired(recv)
      end

      # Once the casts' callbacks ran, nothing waits.
      assert {:ok, []} = Query.pending_messages_at(server, :now)
      GenServer.stop(server)
    end

    test "casts to a registered name are that process's messages, pending from their send" do
      {:ok, server} = Counter.start_link(0)
      Process.register(server, :semantics_named)
      :ok = ElixirScope.trace(:semantics_named, as: :process)
      :ok = ElixirScope.trace(self())
      caller = Task.async(fn -> GenServer.call(server, {:sleep, 150}) end)
      Process.sleep(20)
      GenServer.cast(:semantics_named, :inc)
      Process.sleep(20)
      mid = System.monotonic_time(:nanosecond)
      Task.await(caller)
      wait_until(fn -> Query.state_at(server, :now) == {:ok, 1} end)

      assert {:ok, [%{kind: :send, data: {:"$gen_cast", :inc}} = cast]} =
               Query.pending_messages_at(:semantics_named, mid)

      assert {:ok, %{kind: :receive, pid: ^server}} = Query.paired(cast)
      assert cast.seq in Enum.map(Query.message_flow(self(), :semantics_named), & &1.seq)
      assert cast.seq in Enum.map(Query.events(peer: server), & &1.seq)
      GenServer.stop(server)
    end

    test "a late reply to a call that gave up is never in the caller's mailbox" do
      {:ok, server} = Counter.start_link(0)
      :ok = ElixirScope.trace(server)
      :ok = ElixirScope.trace(self())
      me = self()
      catch_exit(GenServer.call(server, {:sleep, 60}, 10))
      # The reply was sent (to an alias no longer active) and dropped by the VM.
      wait_until(fn -> Query.message_flow(server, me) != [] end)
      [reply] = Query.message_flow(server, me)
      assert {:error, :unpaired} = Query.paired(reply)
      {_, arrived} = Query.pending_messages_at(me, :now)
      refute Enum.any?(arrived, &(&1.seq == reply.seq))
      GenServer.stop(server)
    end

    test "a receive from an untraced sender counts from the receive, and pairs with nothing" do
      {:ok, server} = Counter.start_link(0)
      :ok = ElixirScope.trace(server)
      send(server, :from_untraced)
      wait_until(fn -> Query.messages_to(server) != [] end)
      [recv] = Query.messages_to(server)
      assert {:error, :unpaired} = Query.paired(recv)
      assert {:error, :not_found} = Query.paired(recv.seq + 10_000)
      assert {:error, :unpaired} = Query.paired({:seq, recv.seq})

      assert_raise ArgumentError, ~r/an ElixirScope.Event, a positive seq or \{:seq, n\}/, fn ->
        Query.paired(:nope)
      end
    end
  end

  describe "replies" do
    test "a GenServer's reply to a call alias is a message to the caller" do
      {:ok, server} = Counter.start_link(7)
      :ok = ElixirScope.trace(server)
      :ok = ElixirScope.trace(self())
      assert 7 = GenServer.call(server, :get)
      me = self()

      assert [%{kind: :send, data: {:"$gen_call", {^me, _}, :get}}] =
               Query.message_flow(me, server)

      assert [%{kind: :send, peer: ^me, data: {[:alias | ref], 7}} = reply] =
               Query.message_flow(server, me)

      assert is_reference(ref)
      # The caller's receive of the reply is its other half; the :peer filter finds it too.
      assert {:ok, %{kind: :receive, pid: ^me, data: {[:alias | ^ref], 7}}} = Query.paired(reply)
      assert [%{seq: seq}] = Query.events(pid: server, peer: me, kind: :send)
      assert seq == reply.seq
      assert reply.seq in Enum.map(Query.events(involving: me, kind: :send), & &1.seq)
      GenServer.stop(server)
    end
  end

  describe "why_crashed/1 and links" do
    test "a process killed by a linked process's exit names it and follows the chain" do
      parent = self()

      top =
        spawn(fn ->
          receive do
            :go ->
              spawn_link(fn ->
                send(parent, {:middle, self()})

                spawn_link(fn ->
                  send(parent, {:bottom, self()})

                  receive do
                    :fail -> raise "bottom failed"
                  end
                end)

                Process.sleep(:infinity)
              end)

              Process.sleep(:infinity)
          end
        end)

      :ok = ElixirScope.trace(top)
      ref = Process.monitor(top)
      send(top, :go)
      assert_receive {:middle, middle}
      assert_receive {:bottom, bottom}
      send(bottom, :fail)
      assert_receive {:DOWN, ^ref, :process, ^top, {%RuntimeError{}, _}}
      wait_until(fn -> match?({:ok, _}, Query.why_crashed(top)) end)

      assert {:ok, crash} = Query.why_crashed(top)
      assert crash.exit_signal_from == middle
      assert crash.exception == nil and crash.stacktrace == nil and crash.raised == []
      assert [%{pid: ^middle, exit: {%RuntimeError{}, _}}] = crash.linked

      assert %ElixirScope.Crash{pid: ^middle, exit_signal_from: ^bottom, cause: cause} =
               crash.cause

      assert %ElixirScope.Crash{pid: ^bottom, exit_signal_from: nil, cause: nil} = cause
      assert %RuntimeError{message: "bottom failed"} = cause.exception
      assert [_ | _] = cause.stacktrace

      text = ElixirScope.Crash.format(crash)
      assert text =~ "was killed by an exit signal from linked process #{inspect(middle)}"
      assert text =~ "** (RuntimeError) bottom failed"
    end
  end

  describe "names wherever a pid is taken" do
    test "registered, global and via names resolve when the query runs; unknown ones say so" do
      {:ok, _} = Registry.start_link(keys: :unique, name: SemanticsRegistry)
      {:ok, a} = Agent.start(fn -> 1 end, name: :semantics_agent)
      {:ok, g} = Agent.start(fn -> 2 end, name: {:global, :semantics_global})
      {:ok, v} = Agent.start(fn -> 3 end, name: {:via, Registry, {SemanticsRegistry, :v}})
      :ok = ElixirScope.trace(:semantics_agent)
      :ok = ElixirScope.trace(g)
      :ok = ElixirScope.trace(v)

      assert {:ok, 1} = Query.state_at(:semantics_agent, :now)
      assert {:ok, 2} = Query.state_at({:global, :semantics_global}, :now)
      assert {:ok, 3} = Query.state_at({:via, Registry, {SemanticsRegistry, :v}}, :now)
      assert [%{pid: ^a} | _] = Query.timeline(:semantics_agent)
      assert [%{pid: ^a} | _] = Query.events(pid: :semantics_agent)
      assert [%{data: 1}] = ElixirScope.state_timeline(:semantics_agent)

      # Gone from the VM: the trace remembers who had the name.
      Agent.stop(a, :boom)
      assert {:ok, %{pid: ^a, reason: :boom}} = Query.why_crashed(:semantics_agent)

      assert_raise ArgumentError, ~r/invalid pid :nobody_here: no process is registered/, fn ->
        Query.state_at(:nobody_here, :now)
      end

      assert_raise ArgumentError, ~r/invalid pid \{:global, :nobody\}/, fn ->
        Query.timeline({:global, :nobody})
      end

      Agent.stop(g)
      Agent.stop(v)
    end
  end

  describe "why_crashed/1 without a traced link" do
    test "a link made before tracing: inferred from the identical reason, and said so" do
      parent = self()

      holder =
        spawn(fn ->
          worker =
            spawn_link(fn ->
              receive do
                :fail -> raise "worker failed"
              end
            end)

          send(parent, {:worker, worker})
          Process.sleep(:infinity)
        end)

      assert_receive {:worker, worker}
      # Traced only now: the link between them is older than the trace.
      :ok = ElixirScope.trace(holder, children: false)
      :ok = ElixirScope.trace(worker, children: false)
      ref = Process.monitor(holder)
      send(worker, :fail)
      assert_receive {:DOWN, ^ref, :process, ^holder, {%RuntimeError{}, _}}
      # Both exits recorded (each process records its own, the worker's maybe after the
      # holder's): only then can the signal be inferred.
      wait_until(fn ->
        match?({:ok, _}, Query.why_crashed(holder)) and
          match?({:ok, _}, Query.why_crashed(worker))
      end)

      assert {:ok, crash} = Query.why_crashed(holder)
      assert crash.linked == []
      assert crash.exit_signal_from == worker and crash.exit_signal_inferred
      assert %RuntimeError{message: "worker failed"} = crash.cause.exception
      assert ElixirScope.Crash.format(crash) =~ "inferred: no link was traced"
      # The one that raised is not said to be killed by anyone.
      assert {:ok, %{exit_signal_from: nil, exception: %RuntimeError{}}} =
               Query.why_crashed(worker)
    end
  end

  describe "new-user findings" do
    test "a reply to an untraced caller is in message_flow, known from the server's receive" do
      {:ok, server} = Counter.start_link(4)
      :ok = ElixirScope.trace(server)
      task = Task.async(fn -> GenServer.call(server, :get) end)
      assert 4 = Task.await(task)
      caller = task.pid

      assert [%{kind: :send, pid: ^server, peer: ^caller, data: {[:alias | _], 4}}] =
               Query.message_flow(server, caller)

      GenServer.stop(server)
    end

    test "trace/2 takes global and via names; history queries check their options" do
      {:ok, g} = Agent.start(fn -> 1 end, name: {:global, :semantics_trace_global})
      assert :ok = ElixirScope.trace({:global, :semantics_trace_global})
      assert g in ElixirScope.status().traced.pids

      assert {:error, {:unknown_target, {:global, :nobody}}} =
               ElixirScope.trace({:global, :nobody})

      assert_raise ArgumentError, ~r/unknown option :stor, did you mean :store\?/, fn ->
        Query.state_at(g, :now, stor: nil)
      end

      assert_raise ArgumentError, ~r/unknown option :lmit/, fn ->
        Query.state_timeline(g, lmit: 1)
      end

      assert [_] = Query.state_timeline(g, since: 0 - (1 <<< 62), changes_only: true)
      Agent.stop(g)
    end
  end

  describe "a name over time" do
    test "a server restarted under its name: past questions ask the incarnation of then" do
      child = %{
        id: :named,
        start: {Agent, :start_link, [fn -> :first end, [name: :semantics_restarted]]}
      }

      {:ok, sup} = Supervisor.start_link([child], strategy: :one_for_one)
      :ok = ElixirScope.trace(sup)
      first = Process.whereis(:semantics_restarted)
      :ok = ElixirScope.trace(:semantics_restarted)
      before = System.monotonic_time(:nanosecond)
      Process.exit(first, :boom)
      wait_until(fn -> Process.whereis(:semantics_restarted) not in [nil, first] end)
      second = Process.whereis(:semantics_restarted)
      :ok = ElixirScope.trace(:semantics_restarted)
      Agent.update(second, fn _ -> :second end)

      assert {:ok, :first} = Query.state_at(:semantics_restarted, before)
      assert {:ok, :second} = Query.state_at(:semantics_restarted, :now)
      # The incarnation that crashed, though the name has a live holder again.
      assert {:ok, %{pid: ^first, reason: :boom}} = Query.why_crashed(:semantics_restarted)
      Supervisor.stop(sup)
    end
  end

  describe "documentation" do
    doctest ElixirScope.Query.Names

    test "the Query functions show the documentation of what they delegate to" do
      {:docs_v1, _, _, _, _, _, docs} = Code.fetch_docs(ElixirScope.Query)

      for {name, arity} <- [state_at: 3, pending_messages_at: 3, why_crashed: 2, variables: 2] do
        assert [text] =
                 for({{:function, ^name, ^arity}, _, _, %{"en" => text}, _} <- docs, do: text)

        refute text =~ ~r/^See /
        assert String.length(text) > 100
      end
    end
  end

  describe "readable output" do
    doctest ElixirScope.Format
    doctest ElixirScope.Query.Durations

    test "a timeline, rates and durations read as text" do
      {:ok, server} = GenServer.start(Counter, 0, name: :semantics_counter)
      :ok = ElixirScope.trace(:semantics_counter)
      :ok = ElixirScope.trace(Counter)
      for _ <- 1..3, do: GenServer.cast(server, :inc)
      3 = GenServer.call(server, :get)

      text =
        ExUnit.CaptureIO.capture_io(fn ->
          Query.print_timeline(:semantics_counter, format: [width: 100])
        end)

      lines = String.split(text, "\n", trim: true)
      assert length(lines) == length(Query.timeline(server))
      assert Enum.all?(lines, &(String.length(&1) <= 100))

      assert hd(lines) =~
               ~r/^\s+\+0\.000 ms  #\d+ state :semantics_counter after :sys.get_state\/2: 0/

      assert Enum.at(lines, 1) =~ ~r/#\d+ traced :semantics_counter traced from here/
      assert Enum.any?(lines, &(&1 =~ "#Ref<…"))
      refute text =~ "#Reference<"

      rate = Query.rate([kind: :receive, pid: server], {1, :second})
      assert ElixirScope.Format.rate(rate) =~ ~r/^\d\d:\d\d:\d\d\.\d{3}\s+4 (█)+$/u

      stats = Query.durations(pid: server, mfa: {Counter, :handle_cast, 2})
      assert %ElixirScope.Query.Durations{count: 3} = stats
      # Read as the map it used to be, too.
      assert stats[:count] == 3 and stats[:max] >= stats[:min]
      assert inspect(stats) =~ ~r/#Durations<3 calls: min [\d.]+ (ns|µs|ms)/
      by_mfa = Query.durations([pid: server], :mfa)
      assert ElixirScope.Format.durations(by_mfa) =~ "Counter.handle_cast/2  3 calls"
      GenServer.stop(server)
    end
  end

  describe "progress" do
    test "save/2 and open/2, paged or whole, report progress to the end" do
      import ElixirScope.ScopeCase, only: [temp_path: 1]
      :ok = ElixirScope.trace(self())
      for i <- 1..70_000, do: send(self(), {:t, i})
      me = self()
      report = fn a, b -> send(me, {:progress, a, b}) end
      dir = temp_path("semantics-progress")
      {:ok, n} = ElixirScope.save(dir, progress: report)

      calls = fn ->
        Stream.repeatedly(fn ->
          receive do
            {:progress, a, b} -> {a, b}
          after
            0 -> nil
          end
        end)
        |> Enum.take_while(& &1)
      end

      saved = calls.()
      assert length(saved) >= 2
      assert List.last(saved) == {n, n}
      assert Enum.map(saved, &elem(&1, 0)) == Enum.sort(Enum.map(saved, &elem(&1, 0)))

      {:ok, paged} = ElixirScope.open(dir, progress: report)
      assert ElixirScope.Persist.info(paged).paged >= 1
      assert [_ | _] = opened = calls.()
      {total, total} = List.last(opened)

      {:ok, whole} = ElixirScope.open(dir, since: -(1 <<< 62), progress: report)
      assert ElixirScope.Persist.info(whole).paged == 0
      assert [_ | _] = loaded = calls.()
      assert List.last(loaded) == {total, total}
    end
  end
end
