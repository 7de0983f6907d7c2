defmodule ElixirScope.UIBrowserTest do
  # The web UI in a real headless Chromium, against a real traced GenServer: every view must show
  # what the Elixir API answers. The browser is driven by test/browser/ui.mjs (playwright-core);
  # this test starts the app and the UI and writes the API's answers for it to compare.
  # Screenshots land in _build/ui-screenshots.
  use ExUnit.Case, async: false

  alias ElixirScope.Query
  alias ElixirScope.Query.Aggregate
  alias ElixirScope.UI.{API, View}
  import ElixirScope.ScopeCase, only: [wait_until: 1]

  @moduletag timeout: 120_000
  @moduletag :capture_log

  defmodule Counter do
    use GenServer
    def init(:ok), do: {:ok, %{count: 0, total: 0, label: "counter"}}

    def handle_call({:add, n}, _from, s),
      do: {:reply, s.count + 1, %{s | count: s.count + 1, total: s.total + n}}

    def handle_cast(:reset, s), do: {:noreply, %{s | count: 0}}
    def handle_info({:ping, _}, s), do: {:noreply, s}
  end

  defmodule Worker do
    use GenServer
    def start_link(_), do: GenServer.start_link(__MODULE__, 0, name: :ui_worker)
    def init(n), do: {:ok, n}
    def handle_call(:poison, _from, _n), do: raise(ArgumentError, "poison job")
    def handle_call(job, _from, n), do: {:reply, {:done, job}, n + 1}
  end

  defmodule Pricing do
    use ElixirScope.Track

    @scope true
    def total(items, discount) do
      subtotal = Enum.reduce(items, 0, fn {price, qty}, acc -> acc + price * qty end)
      discounted = subtotal * (1 - discount)
      Float.round(discounted, 2)
    end
  end

  setup_all do
    chromium = System.get_env("CHROMIUM", "/usr/bin/chromium")
    playwright = Path.expand("../../assets/node_modules/playwright-core", __DIR__)

    unless File.exists?(chromium) and File.dir?(playwright) and System.find_executable("node") do
      flunk(
        "the browser tests need Chromium, node and playwright-core: run scripts/browser-setup"
      )
    end

    :ok
  end

  setup do
    ElixirScope.stop()
    ElixirScope.UI.stop()
    {:ok, _} = ElixirScope.start()

    children = [
      %{id: :counter, start: {GenServer, :start_link, [Counter, :ok, [name: :ui_counter]]}},
      Worker
    ]

    {:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one, name: :ui_sup)
    Process.unlink(sup)
    counter = Process.whereis(:ui_counter)
    :ok = ElixirScope.trace(sup)
    :ok = ElixirScope.trace(counter)
    :ok = ElixirScope.trace(Process.whereis(:ui_worker))
    :ok = ElixirScope.trace(self(), children: false)
    for mod <- [Counter, Worker], do: :ok = ElixirScope.trace(mod, as: :module)

    on_exit(fn ->
      ElixirScope.UI.stop()
      ElixirScope.stop()
      Process.exit(sup, :kill)
    end)

    %{counter: counter, sup: sup}
  end

  test "every view shows what the query API answers", %{counter: counter, sup: sup} do
    for i <- 1..60, do: GenServer.call(counter, {:add, i})
    GenServer.cast(counter, :reset)
    for i <- 1..3, do: send(counter, {:ping, i})
    :sys.get_state(counter)

    # The worker crashes on a poison job and is restarted; a tracked function runs.
    old_worker = Process.whereis(:ui_worker)
    ref = Process.monitor(old_worker)
    {:done, :first} = GenServer.call(:ui_worker, :first)
    catch_exit(GenServer.call(:ui_worker, :poison))
    assert_receive {:DOWN, ^ref, _, _, _}

    wait_until(fn ->
      is_pid(Process.whereis(:ui_worker)) and Process.whereis(:ui_worker) != old_worker
    end)

    {:done, :after} = GenServer.call(:ui_worker, :after)
    27.0 = Pricing.total([{10.0, 2}, {2.5, 4}], 0.1)

    # This process runs the browser from here on: what it receives then is not the app's.
    :ok = ElixirScope.untrace(self())
    me = self()
    app = %{counter: counter, sup: sup, old_worker: old_worker, me: me}

    # The live capture (whose controls the last checks use: saved first), then the same
    # capture served offline.
    dir =
      Path.join(System.tmp_dir!(), "elixir_scope_ui_trace_#{System.unique_integer([:positive])}")

    {:ok, _} = ElixirScope.save(dir)
    {:ok, ui} = ElixirScope.UI.start(port: 0)
    browse(ui, expected(ElixirScope.Store.default(), true, app), "live")
    ElixirScope.UI.stop()
    {:ok, trace} = ElixirScope.open(dir)
    {:ok, ui} = ElixirScope.UI.start(port: 0, store: trace)
    browse(ui, expected(trace, false, app), "trace")
    File.rm_rf!(dir)
  end

  # Runs test/browser/ui.mjs against `ui` with the API's answers; screenshots go under
  # _build/test/ui-screenshots (the saved trace's with a "trace-" prefix).
  defp browse(ui, expected, mode) do
    dir = Path.join(Mix.Project.build_path(), "ui-screenshots")

    path =
      Path.join(
        System.tmp_dir!(),
        "elixir_scope_ui_expected_#{System.unique_integer([:positive])}.json"
      )

    File.write!(path, ElixirScope.UI.JSON.encode!(Map.put(expected, :mode, mode)))

    {out, status} =
      System.cmd("node", ["test/browser/ui.mjs", ui.url, path, dir], stderr_to_stdout: true)

    File.rm(path)
    assert status == 0, mode <> ":\n" <> out
    refute out =~ "FAIL"
  end

  # What every view must show, as the query API answers it for `store`.
  defp expected(store, live?, %{counter: counter, sup: sup, old_worker: old_worker, me: me}) do
    o = [store: store]
    own = if live?, do: ElixirScope.UI.own_processes(), else: []
    stats = if live?, do: ElixirScope.status(), else: ElixirScope.Store.stats(store)
    pattern = "{:\"$gen_call\", _, {:add, n}} when n > 55"
    bad = "{:add, "
    {400, %{error: bad_error}} = API.handle(:get, "events", %{"pattern" => bad}, %{store: store})

    states = Query.events(o ++ [pid: counter, kind: :state])
    [_, s2, s3 | _] = states
    page1 = Query.timeline(counter, o ++ [limit: 50])
    page2 = Query.timeline(counter, o ++ [limit: 50, after_seq: List.last(page1).seq])
    matches = Query.find(o ++ [message: pattern]) |> Enum.map(& &1.event.seq)
    # Each call of the five seen twice: sent by the test process, received by the counter.
    assert length(matches) == 10

    flow = Query.sequence([me, counter], o ++ [limit: 100])
    tree = Query.supervision_tree_at(:now, o)
    root = Enum.find(tree, &(&1.pid == sup))
    # Every traced supervisor's changes, as the tree page lists them (from the first event).
    changes =
      for sup <- supervisors(tree),
          sup not in own,
          e <- Query.supervisor_events(sup, o ++ [since: {:seq, 1}, until: :now]),
          do: e.seq

    [restart] = Query.supervisor_events(sup, o)
    {:ok, crash} = Query.why_crashed(old_worker, o)

    # Replay from the poison call's receipt, three steps forward; a jump to a time of day.
    [poison] =
      Query.find(o ++ [pid: old_worker, kind: :receive, message: ~s({:"$gen_call", _, :poison})])

    {:ok, cursor} = ElixirScope.Replay.open(poison.event, o)

    steps =
      Enum.scan(1..3, cursor, fn _, c ->
        {:ok, n} = ElixirScope.Replay.next(c)
        n
      end)

    state_after = fn c ->
      e = c.event

      state =
        case Query.state_at(e.pid, {:seq, e.seq}, o) do
          {:ok, st} -> View.term(st)
          {:error, :no_state} -> nil
        end

      %{seq: e.seq, pid: inspect(e.pid), state: state}
    end

    [timed | _] =
      Query.events(
        o ++
          [
            pid: counter,
            kind: :state,
            after_seq: page1 |> Enum.at(20) |> Map.fetch!(:seq),
            limit: 1
          ]
      )

    clock =
      store
      |> ElixirScope.Store.to_datetime(timed.ts)
      |> DateTime.to_iso8601()
      |> binary_part(11, 15)

    {:ok, jumped} =
      ElixirScope.Replay.open(
        store |> ElixirScope.Store.to_datetime(timed.ts) |> DateTime.truncate(:microsecond),
        o
      )

    [exception] = Query.events(o ++ [pid: old_worker, kind: :exception])
    [call] = Query.tracked_calls({Pricing, :total, 2}, o)
    {:ok, lines} = Query.source_lines(call, o)

    %{
      status: %{events: stats.events, tracing_level: Atom.to_string(stats.tracing_level)},
      counter: inspect(counter),
      tail: Query.events(o ++ [order: :desc, limit: 100]) |> Enum.map(& &1.seq) |> Enum.reverse(),
      pattern: pattern,
      matches: matches,
      bad_pattern: bad,
      bad_pattern_error: bad_error,
      processes:
        for(
          {pid, n} <- Aggregate.group_by(o, :pid),
          is_pid(pid) and pid not in own,
          into: %{},
          do: {inspect(pid), n}
        ),
      timeline: [Enum.map(page1, & &1.seq), Enum.map(page2, & &1.seq)],
      states: Enum.map(states, &%{seq: &1.seq, text: View.term(&1.data)}),
      third_changed:
        for(
          {path, _, _} <- ElixirScope.StateDiff.diff(s2.data, s3.data).changed,
          do: Enum.map_join(path, "", &"[#{inspect(&1)}]")
        ),
      numeric_fields: [":count", ":total"],
      tags:
        for(
          {tag, n} <- Aggregate.group_by(o ++ [pid: counter, kind: :receive], :tag),
          into: %{},
          do: {inspect(tag), n}
        ),
      flow_pids: "#{inspect(me)},#{inspect(counter)}",
      flow: Enum.map(flow, &[&1.seq, inspect(&1.from), inspect(&1.to), Atom.to_string(&1.kind)]),
      sup: inspect(sup),
      tree_children: Enum.map(root.children, &inspect(&1.pid)),
      changes: Enum.sort(changes),
      restart: %{
        seq: restart.seq,
        pid: inspect(restart.data.pid),
        old_pid: inspect(restart.data.old_pid)
      },
      replay: [state_after.(cursor) | Enum.map(steps, state_after)],
      jump: %{clock: clock, seq: jumped.event.seq},
      until: exception.seq,
      crash: %{pid: inspect(old_worker), report: ElixirScope.Crash.format(crash)},
      call: call.seq,
      source:
        for l <- lines, l.bindings != [] do
          [l.line, Enum.map(l.bindings, &"#{&1.name} = #{View.term(&1.value)}")]
        end
    }
  end

  defp supervisors(nodes) do
    Enum.flat_map(nodes, fn n ->
      if Map.has_key?(n, :children), do: [n.pid | supervisors(n.children)], else: []
    end)
  end
end
