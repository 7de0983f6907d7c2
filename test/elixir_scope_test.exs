defmodule ElixirScopeTest do
  # The facade drives one global capture, so these tests run one at a time.
  use ExUnit.Case, async: false

  alias ElixirScope.{Query, Tracer}
  import Bitwise
  import ElixirScope.ScopeCase, only: [wait_until: 1]

  setup do
    ElixirScope.stop()
    on_exit(&ElixirScope.stop/0)
  end

  doctest ElixirScope.Error
  doctest ElixirScope

  defmodule Traced do
    def double(x), do: helper(x) * 2
    defp helper(x), do: x
  end

  test "Track.enabled? follows config :elixir_scope, track:, on by default outside :prod" do
    previous = Application.fetch_env(:elixir_scope, :track)

    try do
      Application.put_env(:elixir_scope, :track, false)
      refute ElixirScope.Track.enabled?()
      Application.put_env(:elixir_scope, :track, true)
      assert ElixirScope.Track.enabled?()
      Application.delete_env(:elixir_scope, :track)
      assert ElixirScope.Track.enabled?() == (Mix.env() != :prod)
    after
      case previous do
        {:ok, v} -> Application.put_env(:elixir_scope, :track, v)
        :error -> Application.delete_env(:elixir_scope, :track)
      end
    end
  end

  test "Store.release_memory gives pooled memory back and reports how much" do
    released = ElixirScope.Store.release_memory()
    assert is_integer(released) and released >= 0
  end

  describe "start/1, stop/0 and status/0" do
    test "start returns the server pid and status reports the settings" do
      assert {:ok, pid} =
               ElixirScope.start(max_events: 5_000, tracing_level: :minimal, sample_rate: 0.5)

      assert is_pid(pid) and Process.alive?(pid)
      assert ElixirScope.running?()

      status = ElixirScope.status()
      assert %{running: true, events: 0, dropped: 0, truncated: 0, capacity: 5_000} = status
      assert %{tracing_level: :minimal, sample_rate: 0.5, bytes: 0} = status

      assert status.traced == %{
               pids: [],
               all: false,
               new: false,
               modules: [],
               state_modules: [],
               lost_patterns: []
             }

      assert {:error, :already_running} = ElixirScope.start()
    end

    test "stop clears every trace flag and pattern, and the capture stays queryable" do
      {:ok, _} = ElixirScope.start()
      {:ok, agent} = Agent.start(fn -> 0 end)
      :ok = ElixirScope.trace(agent)
      :ok = ElixirScope.trace(Traced, locals: true)
      Agent.update(agent, &(&1 + Traced.double(1)))
      assert ElixirScope.stop() == :ok

      refute ElixirScope.running?()
      assert :erlang.trace_info(agent, :flags) == {:flags, []}
      assert :erlang.trace_info(agent, :tracer) == {:tracer, []}
      assert :erlang.trace_info({Traced, :double, 1}, :traced) == {:traced, false}
      assert :erlang.trace_info(:new_processes, :flags) == {:flags, []}
      assert ElixirScope.status().running == false

      calls = Query.module_function_calls(Traced)
      assert Enum.map(calls, & &1.mfa) == [{Traced, :double, 1}, {Traced, :helper, 1}]
      assert ElixirScope.status().events > 0
      Agent.stop(agent)
    end

    test "a crashed server leaves no tracing behind" do
      {:ok, server} = ElixirScope.start()
      {:ok, agent} = Agent.start(fn -> 0 end)
      :ok = ElixirScope.trace(agent)
      :ok = ElixirScope.trace(Traced)
      Agent.get(agent, & &1)
      before = ElixirScope.status().events
      # traced, snapshot, receive, handle_call call/return, state, reply
      assert before == 7
      ref = Process.monitor(server)
      Process.exit(server, :kill)
      assert_receive {:DOWN, ^ref, _, _, :killed}
      # terminate/2 never ran; the janitor cleaned up instead: flags, patterns, the store.
      wait_until(fn -> :erlang.trace_info(agent, :tracer) == {:tracer, []} end)
      assert :erlang.trace_info({Traced, :double, 1}, :traced) == {:traced, false}
      assert :erlang.trace_info(:new_processes, :flags) == {:flags, []}
      assert ElixirScope.status().running == false
      Agent.get(agent, & &1)
      Traced.double(1)
      assert ElixirScope.status().events == before
      assert {:error, :not_running} = ElixirScope.trace(self())
      Agent.stop(agent)
    end

    test "invalid options raise ArgumentError naming the option and the allowed values" do
      for {opts, text} <- [
            {[max_events: 0], ":max_events 0, expected an integer from 1 to 1000000000"},
            {[max_events: 2_000_000_000],
             ":max_events 2000000000, expected an integer from 1 to 1000000000"},
            {[max_bytes: 1.5], ":max_bytes 1.5, expected an integer from 1 to 1099511627776"},
            {[max_events: -1], ":max_events -1, expected an integer from 1 to 1000000000"},
            {[max_bytes: 1 <<< 70],
             ":max_bytes 1180591620717411303424, expected an integer from"},
            {[max_events: :lots], ":max_events :lots"},
            {[tracing_level: :verbose], ":tracing_level :verbose, expected one of: :full"},
            {[sample_rate: 1.5], ":sample_rate 1.5, expected a number from 0.0 to 1.0"},
            {[sample_by: :pid], ":sample_by :pid, expected :process or :event"},
            {[max_payload_bytes: 10],
             ":max_payload_bytes 10, expected an integer from 64 to 1048576"},
            {[colour: :red], "unknown option :colour (allowed options:"},
            {[max_event: 10], "unknown option :max_event, did you mean :max_events? (allowed"},
            {[:oops], "expected a keyword list"}
          ] do
        error = assert_raise ArgumentError, fn -> ElixirScope.start(opts) end
        assert error.message =~ text
      end

      # A bad target is refused before the capture starts, not after.
      error = assert_raise ArgumentError, fn -> ElixirScope.start(trace: "x") end
      assert error.message =~ ~s(start/1's :trace expects a pid, a registered name)
      refute ElixirScope.running?()
    end

    test "status without any capture has every key" do
      status = ElixirScope.status()
      assert status.running == false

      for key <- [
            :events,
            :dropped,
            :truncated,
            :bytes,
            :capacity,
            :tracing_level,
            :sample_rate,
            :traced
          ] do
        assert Map.has_key?(status, key)
      end
    end
  end

  defmodule Shared do
    use GenServer
    def a(x), do: x + 1
    def b(x), do: x + 2
    def c(x), do: x + 3
    @impl true
    def init(n), do: {:ok, n}
    @impl true
    def handle_call(:get, _from, n), do: {:reply, n, n}
  end

  describe "sharing the VM's trace patterns with :dbg" do
    setup do
      {:ok, _} = ElixirScope.start()
      {:ok, _} = :dbg.tracer(:process, {fn _msg, n -> n + 1 end, 0})

      on_exit(fn ->
        :dbg.ctp()
        :dbg.stop()
      end)
    end

    test "another tool's pattern is not overwritten unless told, nor cleared by stop/0" do
      dbg_ms = [{:_, [], [{:return_trace}]}]
      {:ok, _} = :dbg.tpl(Shared, :b, 1, dbg_ms)

      assert ElixirScope.trace(Shared, as: :module) ==
               {:error, {:pattern_in_use, [{Shared, :b, 1}]}}

      assert ElixirScope.Error.describe({:pattern_in_use, [{Shared, :b, 1}]}) =~
               "ElixirScopeTest.Shared.b/1"

      assert :erlang.trace_info({Shared, :b, 1}, :match_spec) == {:match_spec, dbg_ms}
      assert :erlang.trace_info({Shared, :a, 1}, :traced) == {:traced, false}
      assert ElixirScope.status().traced.modules == []

      # A GenServer whose callback :dbg traces: not traced for states unless told.
      {:ok, server} = GenServer.start(Shared, 0)
      {:ok, _} = :dbg.tpl(Shared, :handle_call, 3, dbg_ms)
      assert {:error, {:pattern_in_use, [{Shared, :handle_call, 3}]}} = ElixirScope.trace(server)
      assert ElixirScope.trace(server, states: false) == :ok

      # Told to: ElixirScope's pattern replaces it.
      assert ElixirScope.trace(Shared, as: :module, override: true) == :ok
      assert Tracer.pattern_owner({Shared, :b, 1}) == :ours
      assert ElixirScope.status().traced.lost_patterns == []
      GenServer.stop(server)
    end

    test "a pattern taken from ElixirScope is reported, and left to its new owner at stop" do
      assert ElixirScope.trace(Shared, as: :module) == :ok
      # Called from a process of their own (every process gets ElixirScope's :call flag).
      calls = fn f -> Task.async(f) |> Task.await() end
      assert calls.(fn -> Shared.a(1) end) == 2
      wait_until(fn -> Query.count(kind: :call, mfa: {Shared, :a, 1}) == 1 end)

      # :dbg replaces one pattern and clears another.
      dbg_ms = [{:_, [], [{:message, :mine}]}]
      {:ok, _} = :dbg.tpl(Shared, :b, 1, dbg_ms)
      {:ok, _} = :dbg.ctp(Shared, :c, 1)
      assert ElixirScope.status().traced.lost_patterns == [{Shared, :b, 1}, {Shared, :c, 1}]
      calls.(fn -> Shared.c(1) + Shared.a(2) end)
      wait_until(fn -> Query.count(kind: :call, mfa: {Shared, :a, 1}) == 2 end)
      assert Query.count(kind: :call, mfa: {Shared, :c, 1}) == 0

      :ok = ElixirScope.stop()
      # Its own patterns are gone; :dbg's stays.
      assert :erlang.trace_info({Shared, :a, 1}, :traced) == {:traced, false}
      assert :erlang.trace_info({Shared, :b, 1}, :match_spec) == {:match_spec, dbg_ms}
    end
  end

  describe "trace/2" do
    setup do
      {:ok, _} = ElixirScope.start()
      :ok
    end

    test "a registered name traces that process" do
      {:ok, pid} = Agent.start(fn -> 0 end, name: :scope_test_agent)
      assert :ok = ElixirScope.trace(:scope_test_agent)
      Agent.get(:scope_test_agent, & &1)
      # The snapshot taken when tracing started, then the call: request, callback, state, reply.
      assert [:state, :traced, :receive, :call, :return, :state, :send] =
               Enum.map(Query.timeline(pid), & &1.kind)

      assert ElixirScope.status().traced.pids == [pid]
      Agent.stop(pid)
    end

    test "children are followed unless children: false" do
      parent = self()

      spawner = fn ->
        receive do
          :go -> send(parent, {:child, self(), spawn(fn -> send(parent, :hi) end)})
        end
      end

      a = spawn(spawner)
      b = spawn(spawner)
      :ok = ElixirScope.trace(a)
      :ok = ElixirScope.trace(b, children: false)
      send(a, :go)
      send(b, :go)
      assert_receive {:child, ^a, child_a}
      assert_receive {:child, ^b, child_b}
      # A send event is stored before the message is delivered: no waiting needed.
      assert_receive :hi
      assert_receive :hi
      assert [%{kind: :send, data: :hi}] = Query.messages_from(child_a)
      assert [] = Query.events(pid: child_b)
    end

    test ":new traces processes spawned afterwards" do
      :ok = ElixirScope.trace(:new)
      parent = self()
      pid = spawn(fn -> send(parent, :done) end)
      assert_receive :done
      assert [%{kind: :send, data: :done}] = Query.messages_from(pid)
      assert ElixirScope.status().traced.new
      :ok = ElixirScope.untrace(:new)
      assert :erlang.trace_info(:new_processes, :flags) == {:flags, []}
    end

    test ":all traces running processes but not ElixirScope's own, and leaves other tracers' alone" do
      other_tracer = spawn(fn -> Process.sleep(:infinity) end)
      victim = spawn(fn -> Process.sleep(:infinity) end)
      1 = :erlang.trace(victim, true, [:send, {:tracer, other_tracer}])

      assert :ok = ElixirScope.trace(:all)
      status = ElixirScope.status()
      assert status.traced.all

      assert {:already_traced, victim, other_tracer} in status.skipped

      assert :erlang.trace_info(victim, :tracer) == {:tracer, other_tracer}
      assert :erlang.trace_info(Process.whereis(ElixirScope.Server), :tracer) == {:tracer, []}
      assert {:error, {:already_traced, ^victim, _}} = ElixirScope.trace(victim)

      :ok = ElixirScope.untrace(:all)
      assert :erlang.trace_info(self(), :tracer) == {:tracer, []}
      assert :erlang.trace_info(victim, :tracer) == {:tracer, other_tracer}
      Process.exit(victim, :kill)
      Process.exit(other_tracer, :kill)
    end

    test "a module records calls with arguments and results from any process" do
      :ok = ElixirScope.trace(Traced)
      task = Task.async(fn -> Traced.double(21) end)
      assert Task.await(task) == 42
      assert [call] = Query.function_calls(Traced, :double)
      assert call.pid == task.pid and call.data == [21]

      assert [:call, :return] = Query.events(mfa: {Traced, :double, 1}) |> Enum.map(& &1.kind)

      # Private functions only with locals: true.
      assert Query.function_calls(Traced, :helper) == []
    end

    test "untracing a GenServer module stops recording its states, unless a process is traced" do
      {:ok, kept} = Agent.start_link(fn -> 0 end)
      {:ok, other} = Agent.start_link(fn -> 0 end)
      :ok = ElixirScope.trace(Agent.Server)
      :ok = ElixirScope.trace(kept)
      :ok = ElixirScope.untrace(Agent.Server)
      assert Agent.Server in ElixirScope.status().traced.state_modules
      Agent.update(kept, &(&1 + 1))
      Agent.update(other, &(&1 + 1))
      wait_until(fn -> Query.state_at(kept, :now) == {:ok, 1} end)
      assert Query.state_timeline(other) == []

      :ok = ElixirScope.untrace(kept)
      :ok = ElixirScope.trace(Agent.Server)
      :ok = ElixirScope.untrace(Agent.Server)
      refute Agent.Server in ElixirScope.status().traced.state_modules
      Agent.update(kept, &(&1 + 1))
      Process.sleep(20)
      assert Query.state_at(kept, :now) == {:ok, 1}
    end

    test "module tracing when another tool owns new processes: an error, no crash, no leak" do
      other = spawn(fn -> Process.sleep(:infinity) end)
      :erlang.trace(:new_processes, true, [:send, {:tracer, other}])

      try do
        assert {:error, {:already_traced, :new, ^other}} = ElixirScope.trace(Traced)
        assert ElixirScope.running?()
        assert ElixirScope.status().traced.modules == [Traced]
      after
        :erlang.trace(:new_processes, false, [:all])
        Process.exit(other, :kill)
      end

      :ok = ElixirScope.stop()
      assert :erlang.trace_info({Traced, :double, 1}, :traced) == {:traced, false}
    end

    test "untrace(:all) keeps traced modules working; untracing the last module releases processes" do
      :ok = ElixirScope.trace(Traced)
      :ok = ElixirScope.trace(:all)
      :ok = ElixirScope.untrace(:all)
      assert Task.await(Task.async(fn -> Traced.double(2) end)) == 4
      assert [%{data: [2]}] = Query.function_calls(Traced, :double)
      :ok = ElixirScope.untrace(Traced)
      assert :erlang.trace_info(self(), :tracer) == {:tracer, []}
      assert :erlang.trace_info(:new_processes, :flags) == {:flags, []}
      assert ElixirScope.status().traced.modules == []
    end

    test "bad targets give clear errors and leave the capture intact" do
      dead = spawn(fn -> :ok end)
      ref = Process.monitor(dead)
      assert_receive {:DOWN, ^ref, _, _, _}

      assert {:error, {:dead_process, ^dead}} = ElixirScope.trace(dead)

      assert {:error, {:unknown_target, :no_such_name_or_module}} =
               ElixirScope.trace(:no_such_name_or_module)

      assert {:error, {:refused, :erlang, _}} = ElixirScope.trace(:erlang, as: :module)
      assert {:error, {:refused, ElixirScope.Query, _}} = ElixirScope.trace(ElixirScope.Query)
      assert {:error, {:unknown_target, :nobody}} = ElixirScope.trace(:nobody, as: :process)

      assert_raise ArgumentError, ~r/expects a pid, a registered name/, fn ->
        ElixirScope.trace("x")
      end

      assert_raise ArgumentError, ~r/expects a pid/, fn -> ElixirScope.trace({:a, :b}) end

      assert_raise ArgumentError, ~r/invalid :as :thing/, fn ->
        ElixirScope.trace(self(), as: :thing)
      end

      assert_raise ArgumentError, ~r/unknown option :bogus \(allowed/, fn ->
        ElixirScope.trace(self(), bogus: 1)
      end

      # Bad values are refused at the call, and the capture server is still there after them.
      server = Process.whereis(ElixirScope.Server)

      for {opts, text} <- [
            {[states: nil], "invalid :states nil, expected true or false"},
            {[children: "no"], ~s(invalid :children "no", expected true or false)},
            {[locals: 42], "invalid :locals 42, expected true or false"}
          ] do
        error = assert_raise ArgumentError, fn -> ElixirScope.trace(self(), opts) end
        assert error.message =~ text
      end

      assert_raise ArgumentError, ~r/untrace\/1 expects a pid/, fn -> ElixirScope.untrace("x") end
      assert Process.whereis(ElixirScope.Server) == server

      error =
        assert_raise ElixirScope.Error, fn -> ElixirScope.trace!(:no_such_name_or_module) end

      assert error.reason == {:unknown_target, :no_such_name_or_module}
      assert Exception.message(error) =~ "neither a registered name nor a module"

      assert ElixirScope.running?()
      assert ElixirScope.status().events == 0
    end

    test "seed-compatible entry points" do
      {:ok, gs} = Agent.start(fn -> 1 end)
      assert :ok = ElixirScope.trace_genserver(gs)
      assert :ok = ElixirScope.trace_module(Traced)
      assert {:ok, n} = ElixirScope.trace_all_genservers()
      assert n >= 1
      Agent.get(gs, & &1)
      assert Query.messages_to(gs) != []
      assert :ok = ElixirScope.trace_all_processes()
      assert ElixirScope.status().traced.all
      Agent.stop(gs)
    end

    test "set_level and set_sampling apply at once" do
      {:ok, agent} = Agent.start(fn -> 0 end)
      :ok = ElixirScope.trace(agent, states: false)
      :ok = ElixirScope.set_level(:off)
      Agent.get(agent, & &1)
      # Only the mark of when its tracing started, before the level changed.
      assert [:traced] = Enum.map(Query.events(pid: agent), & &1.kind)
      :ok = ElixirScope.set_level(:messages_only)
      Agent.get(agent, & &1)
      assert [:traced, :receive, :send] = Enum.map(Query.events(pid: agent), & &1.kind)
      :ok = ElixirScope.set_sampling(0.0)
      Agent.get(agent, & &1)
      assert length(Query.events(pid: agent)) == 3
      assert ElixirScope.status().sample_rate == 0.0
      assert_raise ArgumentError, fn -> ElixirScope.set_level(:loud) end
      assert_raise ArgumentError, fn -> ElixirScope.set_sampling(2) end
      Agent.stop(agent)
    end
  end

  test "functions needing a running capture say so" do
    assert {:error, :not_running} = ElixirScope.trace(self())
    assert {:error, :not_running} = ElixirScope.untrace(self())
    assert {:error, :not_running} = ElixirScope.set_level(:full)
  end
end
