defmodule ElixirScope.GovernorTest do
  # The governor on real processes: metrics sampled into the store and queried, each trigger
  # raising detail for its window (recorded), load-aware thinning under real load with
  # hysteresis, and profiles.
  use ExUnit.Case, async: false
  import ElixirScope.ScopeCase

  alias ElixirScope.Query

  doctest ElixirScope.Profile
  doctest ElixirScope.Query.Metrics

  defmodule Crashy do
    def run(x), do: raise(ArgumentError, "bad #{x}")
  end

  setup do
    ElixirScope.stop()

    on_exit(fn ->
      ElixirScope.stop()
      Application.delete_env(:elixir_scope, :profiles)
    end)
  end

  defp controls(event),
    do: for(%{data: %{event: ^event} = d} <- Query.events(kind: :control), do: d)

  defp sleeper, do: spawn(fn -> Process.sleep(:infinity) end)

  # A process that takes every message (a sleeping one leaves them in its signal queue, where
  # no receive event is emitted until something looks at its mailbox).
  defp receiver, do: spawn(fn -> receive_all() end)

  defp receive_all do
    receive do
      _ -> receive_all()
    end
  end

  defp level, do: ElixirScope.status().tracing_level

  describe "metrics" do
    test "samples land in the store; mailbox at T and top growth are queries over them" do
      {:ok, _} = ElixirScope.start(metrics: 100)
      grower = sleeper()
      quiet = sleeper()
      :ok = ElixirScope.trace(grower)
      :ok = ElixirScope.trace(quiet)

      for _ <- 1..6 do
        Enum.each(1..10, &send(grower, {:msg, &1}))
        Process.sleep(120)
      end

      # A sample after the last send sees every message.
      wait_until(fn -> match?({:ok, %{mailbox: 60}}, Query.mailbox_at(grower, :now)) end)
      samples = Query.metrics(grower)
      assert length(samples) >= 5
      mailboxes = Enum.map(samples, & &1.mailbox)
      assert mailboxes == Enum.sort(mailboxes)
      assert List.last(mailboxes) == 60
      assert {:message_queue_len, 60} = Process.info(grower, :message_queue_len)
      assert Enum.all?(samples, &(&1.reductions > 0 and &1.memory > 0))

      middle = Enum.at(samples, 2)
      assert {:ok, ^middle} = Query.mailbox_at(grower, middle.ts)
      assert {:ok, %{mailbox: 60}} = Query.mailbox_at(grower, :now)
      assert Query.mailbox_at(grower, hd(samples).ts - 1) == {:error, :no_sample}

      assert [%{pid: ^grower, growth: growth, from: from, to: to}, %{pid: ^quiet, growth: 0} | _] =
               Query.top_mailbox_growth()

      assert growth == to.mailbox - from.mailbox and growth > 0
      assert [%{pid: ^grower}] = Query.top_mailbox_growth(limit: 1)
    end
  end

  describe "triggers" do
    test "triggers outrun by a ring's evictions say so instead of skipping silently" do
      {:ok, _} =
        ElixirScope.start(
          overflow: :evict_oldest,
          max_events: 8 * 64,
          triggers: [{:crash, tracing_level: :full}]
        )

      sink = sleeper()
      # Far more than the ring holds, between two of the triggers' ticks (100 ms apart).
      flood = spawn_waiting(fn -> Enum.each(1..50_000, &send(sink, &1)) end)
      :ok = ElixirScope.trace(flood)
      :normal = go_and_wait(flood)
      wait_until(fn -> controls(:triggers_missed) != [] end)
      assert [%{events: n} | _] = controls(:triggers_missed)
      assert n > 8 * 64
    end

    test "an exception in a module raises the level for a window, recorded, then falls back" do
      {:ok, _} =
        ElixirScope.start(
          tracing_level: :minimal,
          triggers: [{{:exception, Crashy}, tracing_level: :full, for: 1_500}]
        )

      :ok = ElixirScope.trace(:new)
      {pid, ref} = spawn_monitor(fn -> Crashy.run(1) end)
      assert_receive {:DOWN, ^ref, _, _, _}
      wait_until(fn -> level() == :full end)

      assert [%{trigger: {:exception, Crashy}, cause: %{seq: seq, pid: ^pid}, for: 1_500}] =
               controls(:trigger)

      assert [%{kind: :exit, pid: ^pid}] = Query.events(after_seq: seq - 1, before_seq: seq + 1)
      assert [%{fired: 1, active: true}] = ElixirScope.status().governor.triggers
      wait_until(fn -> level() == :minimal end)
      assert [%{trigger: {:exception, Crashy}}] = controls(:trigger_ended)
    end

    test "an exit of a named process fires, traced or not" do
      name = :governor_test_victim
      victim = spawn(fn -> receive(do: (:stop -> :ok)) end)
      Process.register(victim, name)

      {:ok, _} =
        ElixirScope.start(
          tracing_level: :states_only,
          triggers: [{{:exit, name}, tracing_level: :full, sample_rate: 1.0, for: 60_000}]
        )

      Process.sleep(250)
      assert level() == :states_only
      send(victim, :stop)
      wait_until(fn -> level() == :full end)

      assert [%{trigger: {:exit, ^name}, cause: %{pid: ^victim, reason: :normal}}] =
               controls(:trigger)
    end

    test "a governor that dies is started again, and that is recorded" do
      {:ok, _} = ElixirScope.start(triggers: [{{:mailbox, 5}, sample_by: :event}])
      old = Process.whereis(ElixirScope.Governor)
      ref = Process.monitor(old)
      Process.exit(old, :kill)
      assert_receive {:DOWN, ^ref, _, _, :killed}
      wait_until(fn -> Process.whereis(ElixirScope.Governor) not in [nil, old] end)
      assert [%{condition: {:mailbox, 5}, fired: 0}] = ElixirScope.status().governor.triggers
      assert [%{event: :governor_restarted, reason: :killed}] = controls(:governor_restarted)
    end

    test "an exit trigger on a pid fires once, however long the capture goes on" do
      victim = spawn(fn -> :ok end)
      ref = Process.monitor(victim)
      assert_receive {:DOWN, ^ref, _, _, _}

      {:ok, _} =
        ElixirScope.start(
          tracing_level: :minimal,
          triggers: [{{:exit, victim}, tracing_level: :full, for: 100}]
        )

      wait_until(fn -> controls(:trigger_ended) != [] end)
      Process.sleep(400)
      assert [%{cause: %{pid: ^victim, reason: :noproc}}] = controls(:trigger)
      assert [%{fired: 1, active: false}] = ElixirScope.status().governor.triggers
    end

    test "a level set by the user meanwhile is what a trigger's window falls back to" do
      {:ok, _} =
        ElixirScope.start(
          tracing_level: :minimal,
          triggers: [{{:match, [kind: :exit, data: ":go"]}, tracing_level: :full, for: 300}]
        )

      :ok = ElixirScope.set_level(:states_only)
      :ok = ElixirScope.trace(:new)
      {_, ref} = spawn_monitor(fn -> exit(:go) end)
      assert_receive {:DOWN, ^ref, _, _, :go}
      wait_until(fn -> level() == :full end)
      wait_until(fn -> controls(:trigger_ended) != [] end)
      assert level() == :states_only
    end

    test "a DSL pattern, a mailbox over n and a custom function each fire" do
      me = self()

      {:ok, _} =
        ElixirScope.start(
          tracing_level: :messages_only,
          metrics: 100,
          triggers: [
            {{:match, [kind: :receive, message: "{:alarm, level} when level > 2"]},
             tracing_level: :full, for: 60_000},
            {{:mailbox, 5}, sample_by: :event, for: 60_000},
            {{:fn,
              fn events ->
                send(me, {:checked, length(events)}) && Enum.any?(events, &(&1.data == :ping))
              end}, sample_rate: 0.9, for: 60_000}
          ]
        )

      p = sleeper()
      :ok = ElixirScope.trace(p)
      send(p, {:alarm, 1})
      Process.sleep(300)
      assert controls(:trigger) == []
      send(p, {:alarm, 3})
      wait_until(fn -> level() == :full end)
      assert [%{trigger: {:match, _}, cause: %{pid: ^p}}] = controls(:trigger)

      Enum.each(1..6, &send(p, {:fill, &1}))
      wait_until(fn -> ElixirScope.status().sample_by == :event end)

      assert %{cause: %{pid: ^p, mailbox: n}} =
               Enum.find(controls(:trigger), &match?(%{trigger: {:mailbox, 5}}, &1))

      assert n > 5

      assert_receive {:checked, _}
      assert ElixirScope.status().sample_rate == 1.0
      send(p, :ping)
      wait_until(fn -> ElixirScope.status().sample_rate < 0.95 end)
      assert length(controls(:trigger)) == 3
    end

    test "save: writes the trace so far, which open/1 reads back" do
      dir = Path.join(System.tmp_dir!(), "es_trigger_#{System.unique_integer([:positive])}")
      on_exit(fn -> File.rm_rf!(dir) end)

      {:ok, _} =
        ElixirScope.start(
          triggers: [{{:match, [kind: :receive, message: ":save_now"]}, save: dir, for: 100}]
        )

      p = receiver()
      :ok = ElixirScope.trace(p)
      send(p, :save_now)
      wait_until(fn -> controls(:trigger) != [] end)
      [%{saved: path}] = controls(:trigger)
      assert String.starts_with?(path, dir)
      {:ok, trace} = ElixirScope.open(path)
      assert Enum.any?(Query.events(store: trace, kind: :receive), &(&1.data == :save_now))
    end

    test "bad triggers are refused at start" do
      assert_raise ArgumentError, ~r/invalid trigger condition \{:nope, 1\}/, fn ->
        ElixirScope.start(triggers: [{{:nope, 1}, for: 10}])
      end

      assert_raise ArgumentError, ~r/invalid query pattern/, fn ->
        ElixirScope.start(triggers: [{{:match, [message: "{:x, "]}, for: 10}])
      end

      assert_raise ArgumentError, ~r/invalid :tracing_level :loud/, fn ->
        ElixirScope.start(triggers: [{{:mailbox, 3}, tracing_level: :loud}])
      end

      refute ElixirScope.running?()
    end
  end

  describe "flight recorder" do
    defmodule Fragile do
      use GenServer
      def init(n), do: {:ok, n}
      def handle_cast(:bump, n), do: {:noreply, n + 1}
      def handle_cast(:break, n), do: {:noreply, div(n, 0)}
    end

    for mode <- [:memory, :disk] do
      @tag mode: mode
      test "#{mode}: a crash saves the trace, which open/1 reads and why_crashed explains; a normal exit does not",
           %{mode: mode} do
        flight_recorder_saves_crashes(mode)
      end
    end

    test "bad modes and options are refused" do
      assert_raise ArgumentError, ~r/invalid :mode :tape, expected :memory or :disk/, fn ->
        ElixirScope.flight_recorder(temp_path("es_flight"), mode: :tape)
      end

      assert_raise ArgumentError, ~r/:keep_bytes is for mode: :disk/, fn ->
        ElixirScope.flight_recorder(temp_path("es_flight"), keep_bytes: 1_000_000)
      end

      refute ElixirScope.status().running
      # The caller's start options win over the recorder's.
      {:ok, _} = ElixirScope.flight_recorder(temp_path("es_flight"), overflow: :drop_newest)
      assert ElixirScope.status().overflow == :drop_newest
    end

    defp flight_recorder_saves_crashes(mode) do
      dir = Path.join(System.tmp_dir!(), "es_flight_#{System.unique_integer([:positive])}")
      on_exit(fn -> File.rm_rf!(dir) end)
      {:ok, _} = ElixirScope.flight_recorder(dir, cooldown: 200, dumps: 2, mode: mode)
      st = ElixirScope.status()
      assert {st.profile, st.traced.all} == {:flight_recorder, true}

      case mode do
        # In memory, nothing is written until a crash.
        :memory ->
          assert {st.overflow, st.persist_dir} == {:evict_oldest, nil}
          refute File.exists?(dir)

        :disk ->
          assert String.starts_with?(st.persist_dir, Path.join(dir, "live-"))
      end

      {_, ref} = spawn_monitor(fn -> :ok end)
      assert_receive {:DOWN, ^ref, _, _, :normal}
      {:ok, pid} = GenServer.start(Fragile, 1)
      # Seen starting, its module watched: its states are recorded from then on.
      wait_until(fn -> Fragile in ElixirScope.status().traced.state_modules end)
      ref = Process.monitor(pid)
      GenServer.cast(pid, :bump)
      GenServer.cast(pid, :break)
      assert_receive {:DOWN, ^ref, _, _, {:badarith, _}}, 5_000

      wait_until(fn -> controls(:trigger) != [] end)

      assert [
               %{
                 trigger: :crash,
                 cause: %{pid: ^pid, reason: {:badarith, _}},
                 saved: path
               }
             ] = controls(:trigger)

      assert [_] = File.ls!(Path.join(dir, "crashes"))
      {:ok, trace} = ElixirScope.open(path)
      report = Query.why_crashed(pid, store: trace)
      text = if is_binary(report), do: report, else: inspect(report)
      assert text =~ "ArithmeticError" or text =~ "badarith"
      assert {:ok, 2} = Query.state_at(pid, :now, store: trace)

      # More crashes after the cooldown: only the newest `dumps` saves stay.
      for _ <- 1..3 do
        Process.sleep(250)
        {:ok, p} = GenServer.start(Fragile, 1)
        ref = Process.monitor(p)
        GenServer.cast(p, :break)
        assert_receive {:DOWN, ^ref, _, _, _}, 5_000
        wait_until(fn -> Enum.any?(controls(:trigger), &(&1.cause.pid == p)) end)
      end

      saves = File.ls!(Path.join(dir, "crashes"))
      assert length(saves) == 2
      assert Path.basename(List.last(controls(:trigger)).saved) in saves
    end
  end

  describe "load-aware capture" do
    test "busy schedulers thin the capture; it is restored once load stays low" do
      {:ok, _} =
        ElixirScope.start(
          load: [
            scheduler: 0.6,
            interval: 100,
            calm: 3,
            restore_below: 0.5,
            thin_to: [tracing_level: :minimal, sample_rate: 0.5]
          ]
        )

      Process.sleep(350)
      assert ElixirScope.status().governor.load.state == :normal
      spinners = for _ <- 1..System.schedulers_online(), do: spawn(fn -> spin() end)
      wait_until(fn -> ElixirScope.status().governor.load.state == :thinned end, 600)
      st = ElixirScope.status()
      assert {st.tracing_level, st.sample_rate} == {:minimal, 0.5}
      assert [%{state: :thinned, why: [scheduler: u]}] = controls(:load)
      assert u > 0.6

      Enum.each(spinners, &Process.exit(&1, :kill))
      wait_until(fn -> ElixirScope.status().governor.load.state == :normal end, 600)
      st = ElixirScope.status()
      assert {st.tracing_level, st.sample_rate} == {:full, 1.0}
      assert [%{state: :thinned}, %{state: :normal}] = controls(:load)
    end

    test "a traced mailbox over its threshold thins, with hysteresis until it drains" do
      {:ok, _} = ElixirScope.start(load: [scheduler: 1.0, mailbox: 100, interval: 50, calm: 2])
      parent = self()

      p =
        spawn(fn ->
          take = fn take ->
            receive do
              {:leave, n} ->
                drain_to(n)
                send(parent, {:left, n})
                take.(take)
            end
          end

          take.(take)
        end)

      :ok = ElixirScope.trace(p)
      Enum.each(1..150, &send(p, {:work, &1}))
      wait_until(fn -> level() == :minimal end)
      assert [%{state: :thinned, why: [mailbox: n]}] = controls(:load)
      assert n > 100
      # 80 left: under the threshold, but over 70% of it: stays thin.
      send(p, {:leave, 80})
      assert_receive {:left, 80}
      Process.sleep(400)
      assert level() == :minimal
      assert ElixirScope.status().governor.load.measures.mailbox == 80
      send(p, {:leave, 0})
      assert_receive {:left, 0}
      wait_until(fn -> level() == :full end)
      assert [%{state: :thinned}, %{state: :normal}] = controls(:load)
    end
  end

  describe "profiles" do
    test "a built-in profile with overrides; status names it" do
      {:ok, _} = ElixirScope.start(profile: :deep_dive_dev, max_events: 5_000)
      st = ElixirScope.status()

      assert {st.profile, st.capacity, st.tracing_level, st.traced.all} ==
               {:deep_dive_dev, 5_000, :full, true}

      assert st.governor.metrics.interval == 1_000
    end

    test "lightweight_production is capped, sampled and load-aware" do
      {:ok, _} = ElixirScope.start(profile: :lightweight_production)
      st = ElixirScope.status()

      assert {st.tracing_level, st.rate_cap} == {:states_only, {20_000, 1_000}}
      assert_in_delta st.sample_rate, 0.1, 1.0e-6

      assert st.governor.load.state == :normal
    end

    test "the MCP status tool tells an assistant the profile, the caps and the load" do
      {:ok, _} = ElixirScope.start(profile: :lightweight_production)

      {:ok, %{content: [%{text: text}], isError: false}} =
        ElixirScope.MCP.Tools.call("status", %{}, %{store: :default})

      assert text =~ "profile: lightweight_production"
      assert text =~ "rate cap: {20000, 1000} (tripped: false)"
      assert text =~ "load: normal"
    end

    test "user-defined profiles from the config, and unknown names refused" do
      Application.put_env(:elixir_scope, :profiles,
        mine: [tracing_level: :messages_only, max_events: 1_234]
      )

      {:ok, _} = ElixirScope.start(profile: :mine, sample_rate: 0.5)
      st = ElixirScope.status()

      assert {st.profile, st.tracing_level, st.capacity, st.sample_rate} ==
               {:mine, :messages_only, 1_234, 0.5}

      ElixirScope.stop()

      assert_raise ArgumentError, ~r/unknown profile :theirs \(profiles: .*:mine/, fn ->
        ElixirScope.start(profile: :theirs)
      end
    end

    test "phoenix_focus traces LiveView and channel processes by their modules, also those started later" do
      {:ok, early} = GenServer.start(Phoenix.LiveView.Channel, MyAppWeb.TestLive)
      bystander = sleeper()
      {:ok, _} = ElixirScope.start(profile: :phoenix_focus)
      {:ok, late} = GenServer.start(Phoenix.LiveView.Channel, MyAppWeb.TestLive)
      wait_until(fn -> late in ElixirScope.status().traced.pids end, 600)
      assert early in ElixirScope.status().traced.pids
      refute bystander in ElixirScope.status().traced.pids
      assert MyAppWeb.TestLive in ElixirScope.status().traced.modules

      for p <- [early, late] do
        assert GenServer.call(p, {:event, "inc"}) == 1

        assert Enum.any?(
                 Query.events(pid: p, kind: :receive),
                 &match?({:"$gen_call", _, {:event, "inc"}}, &1.data)
               )

        assert [%{data: ["inc", %{count: 0}]}] =
                 Query.events(pid: p, kind: :call, mfa: {MyAppWeb.TestLive, :handle_event, 2})

        assert {:ok, %{assigns: %{count: 1}}} = Query.state_at(p, :now)
      end
    end
  end

  defp spin, do: spin()

  # Takes {:work, _} messages until `n` are left.
  defp drain_to(n) do
    if elem(Process.info(self(), :message_queue_len), 1) > n do
      receive do
        {:work, _} -> drain_to(n)
      end
    else
      :ok
    end
  end
end

defmodule Phoenix.LiveView.Channel do
  # A stand-in for Phoenix's LiveView process: a GenServer running a LiveView module's callbacks.
  use GenServer
  def init(view), do: {:ok, %{view: view, assigns: %{count: 0}}}

  def handle_call({:event, name}, _from, %{view: view, assigns: a} = s) do
    {:noreply, a} = view.handle_event(name, a)
    {:reply, a.count, %{s | assigns: a}}
  end
end

defmodule MyAppWeb.TestLive do
  # A stand-in for a LiveView module (it exports __live__/0, as `use Phoenix.LiveView` does).
  def __live__, do: %{kind: :view}
  def handle_event("inc", %{count: n} = a), do: {:noreply, %{a | count: n + 1}}
end
