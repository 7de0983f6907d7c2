defmodule ElixirScope.Governor do
  @moduledoc """
  Adapts a running capture to what happens on the node, as `ElixirScope.start/1` asks:

    * `metrics: ms` (or `[interval: ms, max_processes: n]`) - samples the mailbox length,
      reductions and memory of traced processes every `ms` into the store, as `:metrics`
      events (the traced pids, or under `trace(:all)` the `n` processes (default 100) with
      the longest mailboxes). `ElixirScope.Query.Metrics` asks "mailbox at T" and "top by
      mailbox growth".
    * `load: [...]` - load-aware capture: when scheduler utilization (`scheduler: 0.85`),
      VM memory in bytes (`memory: n`) or the longest traced mailbox (`mailbox: 10_000`)
      crosses its threshold, the capture is thinned to `thin_to` (default `[tracing_level:
      :minimal, sample_rate: 0.1]`); once every measure stays below `restore_below` (default
      0.7) of its threshold for `calm` checks in a row (default 3), it is restored. Checked
      every `interval` ms (default 1,000).
    * `triggers: [{condition, action}]` - raise the detail for a window when something
      happens; a trigger fires once per window (not again while its window is open).
      Conditions: `:crash` (any traced process exiting abnormally), `{:exception, module}`
      (an exception raised through a traced function of the module, or a process exiting
      with a stack trace in it), `{:exit, pid | name}` (that process exits, for any reason),
      `{:match, filters}` (an event matching `ElixirScope.Query.find/1` filters, e.g.
      `[kind: :receive, message: "{:error, _}"]`), `{:mailbox, n}` (a traced mailbox over
      `n`), `{:fn, fun}` (`fun.(new_events)` returns true). Actions: `tracing_level:`,
      `sample_rate:` (and `sample_by:`), `for:` ms (default 10,000), and `save: dir`: the
      trace so far is saved into a new directory under `dir`, and again as the window closes;
      the `keep:` newest saves (default 20) stay there; a persisted capture is saved whole,
      as far as its retention kept it. `ElixirScope.flight_recorder/2` is built on these.

  Every change it makes is recorded in the store as a `:control` event saying why (`%{event:
  :trigger, ...}`, `%{event: :load, state: :thinned, why: [...]}`, ...), and `status/0`
  shows its state under `:governor`. Load comes first: a thinned capture stays thin while a
  trigger is active, and is restored to the trigger's detail once load falls.
  """

  use GenServer

  alias ElixirScope.{Args, Options, Query, Store}

  require Logger

  @trigger_tick 100
  @scan_default 1_000
  @page 1_000

  defstruct [
    :store,
    :server,
    :metrics,
    :load,
    :base,
    triggers: [],
    after_seq: 0,
    thinned: false,
    calm: 0,
    measures: %{},
    wall: nil,
    applied: nil,
    scan: %{}
  ]

  @doc false
  # Validates the governor's options of start/1 (metrics, load, triggers); nil when none.
  @spec options!(keyword()) :: map() | nil
  def options!(opts) do
    o = %{
      metrics: metrics!(opts[:metrics]),
      load: load!(opts[:load]),
      triggers: opts |> Keyword.get(:triggers, []) |> triggers!()
    }

    if o.metrics || o.load || o.triggers != [], do: o
  end

  defp metrics!(nil), do: nil
  defp metrics!(ms) when is_integer(ms) and ms >= 100, do: %{interval: ms, max_processes: 100}

  defp metrics!(opts) when is_list(opts) do
    opts = Options.validate!(opts, interval: @scan_default, max_processes: 100)

    %{
      interval: int!(:interval, opts[:interval], 100),
      max_processes: int!(:max_processes, opts[:max_processes], 1)
    }
  end

  defp metrics!(other),
    do:
      Args.bad!(
        :metrics,
        other,
        "an interval in ms (at least 100) or [interval: ms, max_processes: n]"
      )

  defp load!(nil), do: nil

  defp load!(opts) when is_list(opts) do
    opts =
      Options.validate!(opts,
        scheduler: 0.85,
        memory: nil,
        mailbox: 10_000,
        interval: @scan_default,
        thin_to: [tracing_level: :minimal, sample_rate: 0.1],
        restore_below: 0.7,
        calm: 3
      )

    unless is_number(opts[:scheduler]) and opts[:scheduler] > 0 and opts[:scheduler] <= 1,
      do: Args.bad!(:scheduler, opts[:scheduler], "a utilization from 0 (excluded) to 1")

    unless is_number(opts[:restore_below]) and opts[:restore_below] > 0 and
             opts[:restore_below] < 1,
           do: Args.bad!(:restore_below, opts[:restore_below], "a fraction between 0 and 1")

    %{
      scheduler: opts[:scheduler],
      memory: opts[:memory] && int!(:memory, opts[:memory], 1),
      mailbox: opts[:mailbox] && int!(:mailbox, opts[:mailbox], 1),
      interval: int!(:interval, opts[:interval], 10),
      thin_to: settings!(opts[:thin_to]),
      restore_below: opts[:restore_below],
      calm: int!(:calm, opts[:calm], 1)
    }
  end

  defp load!(other),
    do: Args.bad!(:load, other, "a keyword list (scheduler:, memory:, mailbox:, ...)")

  defp triggers!(list) when is_list(list), do: Enum.map(list, &trigger!/1)
  defp triggers!(other), do: Args.bad!(:triggers, other, "a list of {condition, action}")

  defp trigger!({condition, action}) when is_list(action) do
    action =
      Options.validate!(action,
        tracing_level: nil,
        sample_rate: nil,
        sample_by: nil,
        for: 10_000,
        save: nil,
        keep: 20
      )

    %{
      condition: condition!(condition),
      settings: settings!(Keyword.take(action, [:tracing_level, :sample_rate, :sample_by])),
      for: int!(:for, action[:for], 1),
      save: action[:save] && Args.path!(action[:save], :save),
      keep: int!(:keep, action[:keep], 1),
      fired: 0,
      until: nil,
      monitored: nil,
      exited: nil
    }
  end

  defp trigger!(other), do: Args.bad!("trigger", other, "{condition, action keyword list}")

  defp condition!(:crash), do: :crash
  defp condition!({:exception, mod} = c) when is_atom(mod), do: c

  defp condition!({:exit, p} = c) when is_pid(p) or (is_atom(p) and p not in [nil, true, false]),
    do: c

  defp condition!({:mailbox, n} = c) when is_integer(n) and n > 0, do: c
  defp condition!({:fn, f} = c) when is_function(f, 1), do: c

  defp condition!({:match, filters}) do
    # Compiled now: a bad pattern is refused at start, not at the first tick.
    _ = ElixirScope.Query.DSL.compile_filters(filters, [:select])
    {:match, filters}
  end

  defp condition!(other) do
    Args.bad!(
      "trigger condition",
      other,
      ":crash, {:exception, module}, {:exit, pid | name}, {:match, filters}, {:mailbox, n} or {:fn, fun/1}"
    )
  end

  # Level and sampling settings: [tracing_level:, sample_rate:, sample_by:], each optional.
  defp settings!(opts) do
    opts = Options.validate!(opts, tracing_level: nil, sample_rate: nil, sample_by: nil)

    for {k, v} <- opts, v != nil do
      case k do
        :tracing_level -> {k, Options.level!(v)}
        :sample_rate -> {k, Options.sample_rate!(v) / 1}
        :sample_by -> {k, Options.sample_by!(v)}
      end
    end
  end

  defp int!(_k, n, min) when is_integer(n) and n >= min, do: n
  defp int!(k, other, min), do: Args.bad!(k, other, "an integer of at least #{min}")

  @doc false
  def start_link(args), do: GenServer.start_link(__MODULE__, args, name: __MODULE__)

  @doc false
  # The governor's state for status/0, or nil when none runs.
  @spec info() :: map() | nil
  def info do
    GenServer.call(__MODULE__, :info, 5_000)
  catch
    :exit, _ -> nil
  end

  @doc false
  # The capture's own level changed (a limit's fallback): the new base to restore to.
  def set_base(level) do
    case Process.whereis(__MODULE__) do
      nil -> :ok
      pid -> send(pid, {:base_level, level})
    end
  end

  @impl true
  def init({opts, store, server}) do
    st = Store.stats(store)

    s = %__MODULE__{
      store: store,
      server: server,
      metrics: opts.metrics,
      load: opts.load,
      triggers: opts.triggers,
      base: [
        tracing_level: st.tracing_level,
        sample_rate: st.sample_rate,
        sample_by: st.sample_by
      ],
      after_seq: st.last_seq
    }

    if s.metrics, do: send(self(), :metrics)

    # Load is first measured over a whole interval (the start itself is busy).
    if s.load, do: Process.send_after(self(), :load_sample, s.load.interval)
    if s.triggers != [], do: send(self(), :triggers)
    {:ok, %{s | applied: current(store), base: current(store)}}
  end

  @impl true
  def handle_call(:info, _from, s) do
    info = %{
      load:
        s.load &&
          %{
            state: if(s.thinned, do: :thinned, else: :normal),
            measures: s.measures,
            thin_to: s.load.thin_to
          },
      triggers:
        Enum.map(s.triggers, fn t ->
          %{condition: t.condition, fired: t.fired, active: t.until != nil}
        end),
      metrics: s.metrics
    }

    {:reply, info, s}
  end

  @impl true
  def handle_info(:metrics, s) do
    Process.send_after(self(), :metrics, s.metrics.interval)
    s = rescan(s)
    ref = Store.ref(s.store)

    for {pid, {q, r, m}} <- top(s.scan, s.metrics.max_processes) do
      ElixirScope.Native.store_record(ref, :metrics, pid, nil, {q, r, m})
    end

    {:noreply, mailbox_triggers(s)}
  end

  # Scheduler utilization is sampled over the last tenth of each interval (at most 100 ms):
  # the VM's wall-time accounting it needs costs every scheduler switch while it is on.
  def handle_info(:load_sample, s) do
    sample = min(div(s.load.interval, 10), 100)
    Process.send_after(self(), :load, max(sample, 1))
    {:noreply, %{s | wall: wall_time()}}
  end

  def handle_info(:load, s) do
    Process.send_after(self(), :load_sample, s.load.interval - min(div(s.load.interval, 10), 100))
    s = if s.metrics, do: s, else: rescan(s)
    {util, wall} = utilization(s.wall)
    _ = :erlang.system_flag(:scheduler_wall_time, false)
    mailbox = s.scan |> Map.values() |> Enum.map(&elem(&1, 0)) |> Enum.max(fn -> 0 end)

    measures = %{
      scheduler: Float.round(util, 3),
      memory: :erlang.memory(:total),
      mailbox: mailbox
    }

    s = %{s | wall: nil, measures: measures}
    _ = wall
    over = over(measures, s.load, 1.0)
    calm? = over(measures, s.load, s.load.restore_below) == []

    s =
      cond do
        not s.thinned and over != [] ->
          control(s, %{event: :load, state: :thinned, why: over, to: s.load.thin_to})
          apply_settings(%{s | thinned: true, calm: 0})

        s.thinned and calm? and s.calm + 1 >= s.load.calm ->
          control(s, %{event: :load, state: :normal, measures: measures})
          apply_settings(%{s | thinned: false, calm: 0})

        s.thinned and calm? ->
          %{s | calm: s.calm + 1}

        true ->
          %{s | calm: 0}
      end

    {:noreply, if(s.metrics, do: s, else: mailbox_triggers(s))}
  end

  def handle_info(:triggers, s) do
    Process.send_after(self(), :triggers, @trigger_tick)
    stats = Store.stats(s.store)
    published = stats.published_seq
    now = System.monotonic_time(:millisecond)
    s = note_evicted(s, stats.evicted)
    # The events since the last tick that the triggers look at (only the kinds they need,
    # filtered natively), a page at most: the rest is the next tick's (nothing is skipped
    # under load; detection just lags), unless a ring evicts them first (said, above).
    events =
      case kinds_needed(s.triggers) do
        [] ->
          []

        kinds ->
          Query.events(
            store: s.store,
            kind: kinds,
            after_seq: s.after_seq,
            before_seq: published + 1,
            limit: @page
          )
      end

    upto = if length(events) == @page, do: List.last(events).seq, else: published
    {triggers, s} = Enum.map_reduce(s.triggers, s, &check(&1, &2, upto, events))
    s = %{s | triggers: triggers, after_seq: upto}
    # Windows that ended.
    {triggers, ended} =
      Enum.map_reduce(s.triggers, [], fn t, ended ->
        if t.until && now >= t.until,
          do: {%{t | until: nil}, [t | ended]},
          else: {t, ended}
      end)

    s = %{s | triggers: triggers}

    # A trigger that saves writes the trace again as its window ends: the raised detail is on
    # disk too.
    Enum.each(ended, fn t ->
      saved = t.save && save(s.store, t)
      control(s, %{event: :trigger_ended, trigger: t.condition, saved: saved})
    end)

    {:noreply, if(ended != [], do: apply_settings(s), else: s)}
  end

  def handle_info({:store, store}, s), do: {:noreply, %{s | store: store}}

  def handle_info({:base_level, level}, s) do
    {:noreply,
     %{s | base: Keyword.put(s.base, :tracing_level, level), applied: nil} |> apply_settings()}
  end

  def handle_info({:DOWN, _, :process, pid, reason}, s) do
    {triggers, s} =
      Enum.map_reduce(s.triggers, s, fn
        %{condition: {:exit, _}, monitored: ^pid} = t, s ->
          # Fired once for this process: a name is watched again once it names another.
          fire(%{t | monitored: nil, exited: pid}, s, %{pid: pid, reason: reason})

        t, s ->
          {t, s}
      end)

    {:noreply, %{s | triggers: triggers}}
  end

  def handle_info(_msg, s), do: {:noreply, s}

  # One trigger's condition, checked on the events since the last tick.
  defp check(%{condition: {:exception, mod}} = t, s, _upto, events) do
    hit =
      Enum.find(events, fn
        %{kind: :exception, mfa: {^mod, _, _}} -> true
        %{kind: :exit, data: {_, [{^mod, _, _, _} | _]}} -> true
        _ -> false
      end)

    if hit, do: fire(t, s, %{seq: hit.seq, pid: hit.pid}), else: {t, s}
  end

  # Any traced process exiting abnormally.
  defp check(%{condition: :crash} = t, s, _upto, events) do
    case Enum.find(events, &(&1.kind == :exit and abnormal?(&1.data))) do
      nil -> {t, s}
      e -> fire(t, s, %{seq: e.seq, pid: e.pid, reason: e.data})
    end
  end

  defp check(%{condition: {:match, filters}} = t, s, upto, _events) do
    case Query.find(
           filters ++ [store: s.store, after_seq: s.after_seq, before_seq: upto + 1, limit: 1]
         ) do
      [%{event: e} | _] -> fire(t, s, %{seq: e.seq, pid: e.pid})
      _ -> {t, s}
    end
  end

  defp check(%{condition: {:fn, fun}} = t, s, _upto, events) do
    case events do
      [] ->
        {t, s}

      events ->
        if safe_fun(fun, events), do: fire(t, s, %{seq: List.last(events).seq}), else: {t, s}
    end
  end

  defp check(%{condition: {:exit, target}} = t, s, _upto, _events) do
    # Monitored directly: an exit is seen whether the process is traced or not.
    case Map.get(t, :monitored) do
      pid when is_pid(pid) ->
        {t, s}

      _ ->
        case if(is_pid(target), do: target, else: Process.whereis(target)) do
          pid when is_pid(pid) and pid != t.exited ->
            Process.monitor(pid)
            {%{t | monitored: pid}, s}

          _ ->
            {t, s}
        end
    end
  end

  defp check(t, s, _upto, _events), do: {t, s}

  # The kinds of event the triggers read from the store (a custom function: all but
  # ElixirScope's own); a DSL pattern queries on its own, exits are monitored, mailboxes
  # scanned.
  defp kinds_needed(triggers) do
    triggers
    |> Enum.flat_map(fn
      %{condition: :crash} -> [:exit]
      %{condition: {:exception, _}} -> [:exception, :exit]
      %{condition: {:fn, _}} -> ElixirScope.Event.kinds() -- [:control, :metrics]
      _ -> []
    end)
    |> Enum.uniq()
  end

  defp safe_fun(fun, events) do
    fun.(events) == true
  rescue
    e ->
      Logger.error("ElixirScope trigger function raised: #{Exception.message(e)}")
      false
  end

  defp mailbox_triggers(s) do
    {triggers, s} =
      Enum.map_reduce(s.triggers, s, fn
        %{condition: {:mailbox, n}} = t, s ->
          case Enum.find(s.scan, fn {_, {q, _, _}} -> q > n end) do
            {pid, {q, _, _}} -> fire(t, s, %{pid: pid, mailbox: q})
            nil -> {t, s}
          end

        t, s ->
          {t, s}
      end)

    %{s | triggers: triggers}
  end

  # A trigger fires: recorded, its window (re)started, its settings applied, its trace saved.
  # (A trigger whose window is open does not fire again: it fires once per window.)
  defp fire(%{until: until} = t, s, _cause) when until != nil, do: {t, s}

  defp fire(t, s, cause) do
    t = %{t | fired: t.fired + 1, until: System.monotonic_time(:millisecond) + t.for}
    saved = t.save && save(s.store, t)

    control(s, %{
      event: :trigger,
      trigger: t.condition,
      cause: cause,
      settings: t.settings,
      for: t.for,
      saved: saved
    })

    s = %{s | triggers: Enum.map(s.triggers, &if(&1.condition == t.condition, do: t, else: &1))}
    {t, apply_settings(s)}
  end

  defp abnormal?(reason),
    do: reason not in [:normal, :shutdown] and not match?({:shutdown, _}, reason)

  # Saves the trace so far into a new directory under the trigger's `dir`, keeping its `keep`
  # newest saves there. A persisted capture is saved whole (what it wrote, across its stores,
  # as retention left it); any other, its store.
  defp save(store, t) do
    name = "trigger-#{System.os_time(:millisecond)}-#{System.unique_integer([:positive])}"
    path = Path.join(t.save, name)
    opts = if store.trace_dir && store == Store.default(), do: [], else: [store: store]

    case ElixirScope.save(path, opts) do
      {:ok, _} ->
        prune(t.save, t.keep)
        path

      {:error, reason} ->
        # Said as well as recorded: a trigger that should have saved did not.
        Logger.error(
          "ElixirScope could not save the trace: #{ElixirScope.Error.describe(reason)}"
        )

        {:error, reason}
    end
  end

  defp prune(dir, keep) do
    case File.ls(dir) do
      {:ok, names} ->
        names
        |> Enum.filter(&String.starts_with?(&1, "trigger-"))
        |> Enum.sort_by(&(&1 |> String.split("-") |> Enum.at(1) |> Integer.parse() |> elem(0)))
        |> Enum.drop(-keep)
        |> Enum.each(&File.rm_rf(Path.join(dir, &1)))

      _ ->
        :ok
    end
  end

  # The settings in force: thinned under load, else the active triggers' (the last fired wins
  # where they differ), else the base.
  defp apply_settings(s) do
    # Settings changed by somebody else since (ElixirScope.set_level/1, set_sampling/2, a
    # limit's fallback) become the base to come back to.
    s =
      case current(s.store) do
        now when s.applied != nil -> if same?(now, s.applied), do: s, else: %{s | base: now}
        _ -> s
      end

    active = s.triggers |> Enum.filter(& &1.until) |> Enum.sort_by(& &1.until)
    raised = Enum.reduce(active, s.base, &Keyword.merge(&2, &1.settings))
    wanted = if s.thinned, do: Keyword.merge(raised, s.load.thin_to), else: raised

    if s.applied == nil or not same?(wanted, s.applied) do
      :ok = Store.set_level(s.store, wanted[:tracing_level])
      :ok = Store.set_sampling(s.store, wanted[:sample_rate], wanted[:sample_by])
    end

    # As the store reads them back (its sample rate is a fixed-point fraction).
    %{s | applied: current(s.store)}
  end

  defp control(s, data), do: Store.record_control(s.store, data)

  defp same?(a, b) do
    a[:tracing_level] == b[:tracing_level] and a[:sample_by] == b[:sample_by] and
      abs(a[:sample_rate] - b[:sample_rate]) < 1.0e-6
  end

  defp current(store) do
    st = Store.stats(store)
    [tracing_level: st.tracing_level, sample_rate: st.sample_rate, sample_by: st.sample_by]
  end

  # Which thresholds the measures cross, scaled by `factor`.
  defp over(m, load, factor) do
    [
      scheduler: m.scheduler > load.scheduler * factor,
      memory: load.memory != nil and m.memory > load.memory * factor,
      mailbox: load.mailbox != nil and m.mailbox > load.mailbox * factor
    ]
    |> Enum.filter(&elem(&1, 1))
    |> Enum.map(fn {k, _} -> {k, Map.fetch!(m, k)} end)
  end

  # A ring-mode store evicted events the triggers had not looked at yet (they lagged more than
  # the ring holds): said in the log and recorded, never skipped silently.
  defp note_evicted(s, evicted) when s.triggers != [] and evicted > s.after_seq do
    Logger.warning("ElixirScope's triggers missed #{evicted - s.after_seq} evicted events")
    control(s, %{event: :triggers_missed, events: evicted - s.after_seq})
    %{s | after_seq: evicted}
  end

  defp note_evicted(s, _evicted), do: s

  # Per normal scheduler: {id, active, total}. The VM keeps these only while the
  # scheduler_wall_time flag is on.
  defp wall_time do
    _ = :erlang.system_flag(:scheduler_wall_time, true)

    case :erlang.statistics(:scheduler_wall_time) do
      list when is_list(list) ->
        Enum.filter(list, fn {id, _, _} -> id <= :erlang.system_info(:schedulers) end)

      :undefined ->
        []
    end
  end

  # Utilization of the normal schedulers since `before`.
  defp utilization(before) do
    now = wall_time()

    {active, total} =
      Enum.zip(Enum.sort(before || []), Enum.sort(now))
      |> Enum.reduce({0, 0}, fn {{_, a0, t0}, {_, a1, t1}}, {a, t} ->
        {a + a1 - a0, t + t1 - t0}
      end)

    {if(total > 0, do: active / total, else: 0.0), now}
  end

  # Mailbox length, reductions and memory of the traced processes (the server says which).
  defp rescan(s) do
    pids =
      case GenServer.call(s.server, :traced_pids, 10_000) do
        {:all, own} -> Process.list() -- own
        {:pids, pids} -> pids
      end

    scan =
      for pid <- pids,
          {:message_queue_len, q} <- [Process.info(pid, :message_queue_len)],
          info = Process.info(pid, [:reductions, :memory]),
          info != nil,
          into: %{},
          do: {pid, {q, info[:reductions], info[:memory]}}

    %{s | scan: scan}
  catch
    :exit, _ -> s
  end

  # The `n` processes with the longest mailboxes (then the most memory).
  defp top(scan, n) do
    if map_size(scan) <= n,
      do: Enum.to_list(scan),
      else: scan |> Enum.sort_by(fn {_, {q, _, m}} -> {q, m} end, :desc) |> Enum.take(n)
  end
end
