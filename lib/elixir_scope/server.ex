defmodule ElixirScope.Server do
  @moduledoc false
  # Owns the running capture: the store and the set of trace targets. All
  # trace flag changes go through it, so they are serialized, and its terminate/2 clears every
  # flag and pattern it set, whatever way it stops.

  use GenServer

  alias ElixirScope.{Limits, Native, Persist, Store, Tracer}

  require Logger

  defstruct [
    :store,
    :janitor,
    :flusher,
    # A ring-mode store's: carries the last states of live processes past evictions.
    :keeper,
    :persist_dir,
    :store_opts,
    :profile,
    :governor,
    # The governor's options, to start it again should it die.
    :governor_opts,
    limits: %Limits{},
    # Targets resolved again every second ({:processes_running, mods}, {:modules_exporting,
    # funs}): what they cover appears after the trace call too.
    selectors: [],
    generation: 1,
    state_modules: MapSet.new(),
    pids: MapSet.new(),
    modules: %{},
    all: false,
    new: false,
    # Whether processes that start a GenServer-like process while traced get their states
    # recorded (trace(:new), trace(:all), trace(pid) with children).
    watch_new: false,
    skipped: [],
    # Running watches (ElixirScope.watch/2,3): pid => %{what:, io:}. The patterns the watches
    # set and the processes they traced are undone when no watch needs them any more.
    watches: %{},
    watch_patterns: MapSet.new(),
    watch_traced: MapSet.new(),
    # Started by a watch: stops once the last watch is gone.
    by_watch: false,
    # Per {:processes_running, _} selector, the pids it looked at already (only new
    # processes are examined); the timer of the next look, while there are selectors.
    selected: %{},
    reselect: nil
  ]

  def start_link(opts), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  def child_spec(opts) do
    # Stopping writes what the flusher had not written yet and seals the trace: give it time.
    %{
      id: __MODULE__,
      start: {__MODULE__, :start_link, [opts]},
      restart: :temporary,
      shutdown: 60_000
    }
  end

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    {persist, opts} = Keyword.pop(opts, :persist)
    {limits, opts} = Keyword.pop(opts, :limits, %Limits{})
    {profile, opts} = Keyword.pop(opts, :profile)
    {governor, store_opts} = Keyword.pop(opts, :governor)
    store = Store.new!(store_opts)

    case persist && Persist.start(store, persist) do
      {:error, reason} ->
        {:stop, {:persist, reason}}

      _ ->
        Persist.forget_follower()
        store = if persist, do: Persist.with_follower(store, persist), else: store
        Store.put_default(store)
        :ok = Native.store_set_watcher(Store.ref(store), self())
        # The janitor first: it waits for a previous capture's janitor, whose cleanup would
        # otherwise undo what this capture sets up (the receive pattern below, say).
        janitor = start_janitor(store)
        Tracer.mark_timeouts()
        ElixirScope.Track.Runtime.enable(Store.ref(store))
        server = self()

        flusher =
          persist && spawn_link(fn -> flush_loop(server, store, persist.flush_interval, 0) end)

        keeper = store_opts[:overflow] == :evict_oldest && spawn_link(fn -> carry_loop(store) end)

        Application.delete_env(:elixir_scope, :stopped_by)

        governor_opts = governor
        governor = governor && start_governor(governor_opts, store)

        {:ok,
         %__MODULE__{
           store: store,
           janitor: janitor,
           flusher: flusher,
           keeper: keeper || nil,
           persist_dir: persist && persist.dir,
           store_opts: store_opts,
           profile: profile,
           governor: governor,
           governor_opts: governor_opts,
           limits: Limits.arm(limits, store)
         }}
    end
  end

  # A ring-mode store evicts its oldest events an eighth of its budget (a generation) at a
  # time: the last state of each live process about to be evicted (within two generations) is
  # stored again (unchanged, now), so `state_at` still answers for quiet processes (see
  # `ElixirScope.Store.new!/1`). A pass runs every @carry_every ms, or as often as it takes to
  # see each generation go by (at the rate events came in during the last pass), down to every
  # @carry_fastest ms.
  @carry_every 250
  @carry_fastest 5
  defp carry_loop(store, interval \\ @carry_every, seen \\ 0) do
    Process.sleep(interval)
    Native.store_carry_states(Store.ref(store))
    %{last_seq: last, capacity: capacity} = Store.stats(store)
    generation = div(capacity, 8)
    came = max(last - seen, 1)
    # The time a generation takes to fill, at that rate.
    fill = div(generation * interval, came)
    carry_loop(store, fill |> min(@carry_every) |> max(@carry_fastest), last)
  end

  # Writes new events to the trace directory every `interval` ms: a flush starts `interval` ms
  # after the previous one started (at once when that one took longer), so what a crash loses
  # is bounded by the interval plus one flush, not by their sum. Once the store is half full,
  # asks the server for a fresh one to go on with (the full one is then on disk). A write error
  # (a full disk) stops persisting, not the capture.
  defp flush_loop(server, store, interval, took) do
    Process.sleep(max(interval - took, 0))
    started = System.monotonic_time(:millisecond)
    flushed = Persist.flush(store)
    took = System.monotonic_time(:millisecond) - started

    case flushed do
      {:ok, _} ->
        if half_full?(store) do
          # The server always answers (with the store to go on with); the flusher is linked
          # to it, so it never waits for a server that is gone.
          send(server, {:roll, store})

          receive do
            {:store, next} -> flush_loop(server, next, interval, took)
          end
        else
          flush_loop(server, store, interval, took)
        end

      {:error, reason} ->
        Logger.error(
          "ElixirScope stopped writing its trace: #{ElixirScope.Error.describe(reason)}"
        )

        # What is on disk no longer keeps up: queries go back to the capture's memory.
        Persist.forget_follower()
        Persist.finish(store)
        send(server, {:persist_failed, store})

      :none ->
        :ok
    end
  end

  # Patterns ElixirScope set that another tool cleared or replaced since (`:dbg.ctp`, `:dbg.tpl`
  # on the same functions): those calls and states are no longer captured.
  defp lost_patterns(s) do
    calls = Enum.flat_map(s.modules, fn {mod, locals?} -> Tracer.lost_patterns(mod, locals?) end)
    states = Enum.flat_map(s.state_modules, &Tracer.lost_state_patterns/1)
    (calls ++ states) |> Enum.uniq() |> Enum.sort()
  end

  # Until no process is left on `old` (a process not moved yet may spawn a child onto it).
  defp move_processes(_old, _new, 0), do: :ok

  defp move_processes(old, new, tries) do
    if Tracer.move_all(old, new) > 0, do: move_processes(old, new, tries - 1)
  end

  defp half_full?(store) do
    s = Store.stats(store)
    s.events * 2 >= s.capacity or s.payload_bytes * 2 >= s.max_bytes
  end

  @impl true
  def handle_call({:trace, target, opts}, {caller, _}, s) do
    # Traced by the user now: no watch's end untraces it.
    s = %{s | watch_traced: MapSet.delete(s.watch_traced, target)}
    {reply, s} = trace(target, Keyword.put(opts, :caller, caller), s)
    {:reply, reply, s}
  end

  def handle_call({:untrace, target}, _from, s) do
    {reply, s} = untrace(target, s)
    {:reply, reply, s}
  end

  def handle_call(:status, _from, s) do
    traced = %{
      pids: s.pids |> Enum.filter(&Process.alive?/1) |> Enum.sort(),
      all: s.all,
      new: s.new,
      modules: Enum.sort(Map.keys(s.modules)),
      state_modules: Enum.sort(MapSet.to_list(s.state_modules)),
      lost_patterns: lost_patterns(s)
    }

    more = %{
      persist_dir: s.persist_dir,
      generation: s.generation,
      profile: s.profile,
      limits: Limits.to_map(s.limits)
    }

    {:reply, {s.store, traced, s.skipped, more}, s}
  end

  def handle_call(:store, _from, s), do: {:reply, s.store, s}

  # The processes whose metrics the governor samples.
  def handle_call(:traced_pids, _from, %{all: true} = s),
    do: {:reply, {:all, own_processes(s)}, s}

  def handle_call(:traced_pids, _from, s),
    do: {:reply, {:pids, Enum.filter(s.pids, &Process.alive?/1)}, s}

  # A watch starts: its process and its output device are never traced, and what it watches
  # is captured.
  def handle_call({:watch, pid, what, io}, _from, s) do
    quiet = [pid | io_chain(io)]
    Enum.each(quiet, &quiet(&1, s.store))
    # Listed first, so that tracing every process for calls leaves them out.
    s = %{s | watches: Map.put(s.watches, pid, %{what: :pending, io: io})}

    case watch(what, s) do
      {:ok, s} ->
        Process.monitor(pid)
        {:reply, :ok, %{s | watches: Map.put(s.watches, pid, %{what: what, io: io})}}

      {error, s} ->
        {:reply, error, %{s | watches: Map.delete(s.watches, pid)}}
    end
  end

  # A watch ends; the answer tells it to stop the capture when it started it and is the last.
  def handle_call({:unwatch, pid}, _from, s) do
    s = unwatch(pid, s)
    {:reply, if(s.by_watch and s.watches == %{}, do: :stop_capture, else: :ok), s}
  end

  def handle_call(:by_watch, _from, s), do: {:reply, :ok, %{s | by_watch: true}}

  def handle_call(:flush, _from, %{persist_dir: nil} = s),
    do: {:reply, {:error, :not_persisted}, s}

  def handle_call(:flush, _from, s) do
    case Persist.flush(s.store) do
      {:ok, _} -> {:reply, {:ok, s.persist_dir}, s}
      other -> {:reply, other, s}
    end
  end

  # A persisted capture whose store is half full goes on in a fresh store; the full one, all on
  # disk, is dropped. The trace on disk continues, seq after seq. The fresh store keeps the
  # level and sampling the capture has now.
  @impl true
  def handle_info({:roll, old}, %{store: old} = s) do
    st = Store.stats(old)

    opts =
      Keyword.merge(s.store_opts,
        tracing_level: st.tracing_level,
        sample_rate: st.sample_rate,
        sample_by: st.sample_by
      )

    new = %{Store.new!(opts) | trace_dir: old.trace_dir}
    :ok = Native.store_set_watcher(Store.ref(new), self())
    Limits.rearm(s.limits, new)
    # The patterns are set (and may be partly another tool's now): only the store learns them.
    Enum.each(s.state_modules, &Tracer.register_states(&1, new))
    # The janitor cleans up both until the switch is done.
    send(s.janitor, {:stores, [new, old]})
    ElixirScope.Track.Runtime.enable(Store.ref(new))
    Store.put_default(new)
    move_processes(old, new, 5)
    # Closed first, so that nothing more lands in it once its last events are written.
    Store.close(old)

    s =
      case Persist.move(old, new) do
        {:ok, _} ->
          %{s | store: new}

        other ->
          Logger.error("ElixirScope stopped writing its trace: #{inspect(other)}")
          # Nothing more reaches the disk: queries read the capture's memory.
          Persist.forget_follower()
          new = %{new | trace_dir: nil}
          Store.put_default(new)
          %{s | store: new, persist_dir: nil}
      end

    send(s.janitor, {:stores, [s.store]})
    send(s.flusher, {:store, s.store})
    if s.governor, do: send(s.governor, {:store, s.store})
    for pid <- Map.keys(s.watches), do: send(pid, {:store, s.store})
    {:noreply, %{s | generation: s.generation + 1}}
  end

  # A roll asked for a store that was already replaced: go on with the current one.
  def handle_info({:roll, _stale}, s) do
    if s.flusher, do: send(s.flusher, {:store, s.store})
    {:noreply, s}
  end

  def handle_info({:persist_failed, store}, %{store: store} = s) do
    store = %{store | trace_dir: nil}
    Store.put_default(store)
    {:noreply, %{s | store: store, persist_dir: nil}}
  end

  # A traced process starts a GenServer-like process whose module the store does not watch yet
  # (the tracer's hook on :gen.init_it, before init/1 runs): watch it, and snapshot the state
  # once init is done, for what ran before the patterns were set. Only for processes traced for
  # themselves (not the ones with just :call, for a traced module's calls).
  def handle_info({:elixir_scope_state_server, pid, mod}, s) do
    if s.watch_new and Tracer.traced_for_itself?(pid, s.store) and
         (Tracer.callback_module?(mod) or Tracer.statem_module?(mod)) do
      case watch_module_states(mod, false, s) do
        {:ok, s} ->
          snapshot_later(pid, s.store)
          {:noreply, s}

        _ ->
          {:noreply, s}
      end
    else
      {:noreply, s}
    end
  end

  # A limit is reached (the rate cap already turned the level off, natively): record it, then
  # stop or go on at the lighter level.
  def handle_info({:elixir_scope_limit, which}, s) do
    value = Map.fetch!(s.limits, which)
    action = Limits.action(s.limits, which)
    Store.record_control(s.store, %{event: :limit, limit: which, value: value, action: action})
    limits = %{s.limits | tripped: s.limits.tripped ++ [{which, action}]}
    s = %{s | limits: limits}
    why = Limits.describe(which, value)

    case action do
      :stop ->
        Logger.warning("ElixirScope stopped its capture: #{why}")
        Application.put_env(:elixir_scope, :stopped_by, {which, value})
        {:stop, :normal, s}

      {:level, level} ->
        Logger.warning("ElixirScope lowered its tracing level to #{inspect(level)}: #{why}")
        :ok = Store.set_level(s.store, level)
        ElixirScope.Governor.set_base(level)
        Limits.rearm(limits, s.store)
        {:noreply, s}
    end
  end

  # The timer ends with the last selector (and is armed again by the next one).
  def handle_info(:reselect, %{selectors: []} = s), do: {:noreply, %{s | reselect: nil}}

  def handle_info(:reselect, s) do
    s = %{s | reselect: Process.send_after(self(), :reselect, 1_000)}

    s =
      Enum.reduce(s.selectors, s, fn {sel, opts}, s ->
        {_, s} = trace(sel, opts, s)
        s
      end)

    {:noreply, s}
  end

  # A watch gone without saying so (killed): undone; the last one takes a capture it started.
  def handle_info({:DOWN, _, :process, pid, _}, %{watches: w} = s) when is_map_key(w, pid) do
    s = unwatch(pid, s)
    if s.by_watch and s.watches == %{}, do: {:stop, :normal, s}, else: {:noreply, s}
  end

  # The governor died (a bug, or killed): said and recorded, and started again (its triggers'
  # windows and load state begin afresh), so that triggers and load-aware capture do not stop
  # silently.
  def handle_info({:EXIT, pid, reason}, %{governor: pid} = s) do
    Logger.error("ElixirScope's governor stopped (#{inspect(reason)}); starting it again")
    Store.record_control(s.store, %{event: :governor_restarted, reason: reason})
    {:noreply, %{s | governor: start_governor(s.governor_opts, s.store)}}
  end

  # The ring's keeper died (it never should): said, and started again.
  def handle_info({:EXIT, pid, reason}, %{keeper: pid} = s) do
    Logger.error("ElixirScope's state keeper stopped (#{inspect(reason)}); starting it again")
    store = s.store
    {:noreply, %{s | keeper: spawn_link(fn -> carry_loop(store) end)}}
  end

  def handle_info({:EXIT, pid, reason}, %{flusher: pid} = s) when reason != :normal do
    Logger.error("ElixirScope's trace writer stopped: #{inspect(reason)}")
    {:noreply, %{s | flusher: nil}}
  end

  def handle_info(_msg, s), do: {:noreply, s}

  @impl true
  def terminate(_reason, s) do
    if s.flusher, do: Process.exit(s.flusher, :kill)
    if s.keeper, do: Process.exit(s.keeper, :kill)
    # Linked, but a :normal stop does not take it along.
    if s.governor, do: Process.exit(s.governor, :kill)
    watched = for {mod, _, _} <- s.watch_patterns, do: mod
    cleanup(s.store, Map.keys(s.modules) ++ MapSet.to_list(s.state_modules) ++ watched)
    # Cleaned up here: the janitor can go. (It gets this before the server's :DOWN.)
    send(s.janitor, :done)
  end

  defp cleanup(store, modules) do
    ElixirScope.Track.Runtime.disable()
    Tracer.unhook_state_servers()
    Tracer.unmark_timeouts()
    Enum.each(modules, &Tracer.untrace_module/1)
    Tracer.untrace_all(store)
    Store.close(store)
    # What the flusher had not written yet, then the last segment is sealed.
    _ = Persist.finish(store)
    :ok
  end

  # A process that outlives the server by a moment: when the server dies in any way (even
  # :kill, which skips terminate/2), it clears the flags and patterns and closes the store, so
  # no process keeps tracing into an orphaned store.
  defp start_janitor(store) do
    await_previous_janitor()
    server = self()

    spawn(fn ->
      ref = Process.monitor(server)
      # A previous janitor that outlived the wait keeps the name; this one works unnamed.
      _ = Process.whereis(ElixirScope.Janitor) || Process.register(self(), ElixirScope.Janitor)
      janitor_loop(ref, store, [])
    end)
  end

  # A previous capture's janitor may still be cleaning up after a killed server; let it finish
  # first, or its cleanup would undo this capture's trace patterns.
  defp await_previous_janitor do
    case Process.whereis(ElixirScope.Janitor) do
      nil ->
        :ok

      pid ->
        ref = Process.monitor(pid)

        receive do
          {:DOWN, ^ref, _, _, _} -> :ok
        after
          5_000 -> Process.demonitor(ref, [:flush])
        end
    end
  end

  defp janitor_loop(ref, store, modules) do
    receive do
      {:traced_module, mod} ->
        janitor_loop(ref, store, [mod | modules])

      {:stores, stores} ->
        janitor_loop(ref, stores, modules)

      :done ->
        :ok

      {:DOWN, ^ref, :process, _, _} ->
        store |> List.wrap() |> Enum.each(&cleanup(&1, Enum.uniq(modules)))
    end
  end

  defp trace(pid, opts, s) when is_pid(pid) do
    extra = if Keyword.get(opts, :children, true), do: [:set_on_spawn], else: []

    states? = Keyword.get(opts, :states, true)
    ours? = Tracer.free?(pid) or Tracer.ours?(pid, s.store)

    # A free process (no tracer yet), or one that is ours already (for a traced module's calls,
    # say), gets state patterns and a snapshot; another tracer's process is left alone.
    watched =
      if states? and ours?,
        do: watch_states(pid, Keyword.get(opts, :override, false), s),
        else: {:ok, s}

    watched =
      case watched do
        {:ok, s} when states? and extra != [] -> {:ok, watch_new(s)}
        other -> other
      end

    # (A state module registered stays in `s` even if tracing the process fails: its patterns
    # are set, and stop/0 must clear them.)
    case watched do
      {:ok, s} ->
        case Tracer.trace_pid(pid, s.store, Tracer.flags() ++ extra) do
          :ok ->
            # Known from now on, even before it does anything.
            Tracer.mark_traced(pid, s.store)
            {:ok, %{s | pids: MapSet.put(s.pids, pid)}}

          error ->
            {error, s}
        end

      error ->
        {error, s}
    end
  end

  defp trace(:all, opts, s) do
    # States first, for the processes running now (snapshots before their flags are set, so
    # that the snapshots' own messages are not traced), then the hook for those started later.
    s =
      if Keyword.get(opts, :states, true),
        do: s |> watch_running(opts[:caller]) |> watch_new(),
        else: s

    case Tracer.trace_all(s.store, Tracer.flags(), own_processes(s)) do
      {:ok, %{skipped: skipped}} ->
        for pid <- Process.list(),
            Tracer.traced_for_itself?(pid, s.store),
            do: Tracer.mark_traced(pid, s.store)

        {:ok, %{s | all: true, new: true, skipped: skipped}}

      error ->
        {error, s}
    end
  end

  defp trace(:new, opts, s) do
    s = if Keyword.get(opts, :states, true), do: watch_new(s), else: s

    case Tracer.trace_new(s.store, Tracer.flags()) do
      :ok -> {:ok, %{s | new: true}}
      error -> {error, s}
    end
  end

  defp trace({:processes_running, mods} = sel, opts, s) do
    s = select(sel, opts, s)
    # Each process is looked at once (its dictionary is copied to find its initial call).
    all = Process.list()
    seen = Map.get(s.selected, sel, MapSet.new())
    fresh = Enum.reject(all -- own_processes(s), &(&1 in seen))
    seen = MapSet.intersection(MapSet.new(all), MapSet.union(seen, MapSet.new(fresh)))
    s = %{s | selected: Map.put(s.selected, sel, seen)}

    Enum.reduce(fresh, {:ok, s}, fn pid, {reply, s} ->
      if running?(pid, mods) and not Tracer.traced_for_itself?(pid, s.store),
        do: keep_first(reply, trace(pid, Keyword.put(opts, :children, false), s)),
        else: {reply, s}
    end)
  end

  defp trace({:modules_exporting, funs} = sel, opts, s) do
    s = select(sel, opts, s)

    for {mod, _} <- :code.all_loaded(),
        not Map.has_key?(s.modules, mod),
        Enum.any?(funs, fn {f, a} -> function_exported?(mod, f, a) end),
        reduce: {:ok, s} do
      {reply, s} -> keep_first(reply, trace_module(mod, opts, s))
    end
  end

  defp trace(name, opts, s) when is_atom(name) do
    pid = Process.whereis(name)
    as = Keyword.get(opts, :as, :auto)

    module? =
      as in [:auto, :module] and
        (as == :module or match?({:module, _}, Code.ensure_loaded(name)))

    cond do
      as == :process and pid == nil -> {{:error, {:unknown_target, name}}, s}
      as == :process -> trace(pid, opts, s)
      as == :module -> trace_module(name, opts, s)
      pid != nil and module? -> with_module(trace(pid, opts, s), name, opts)
      pid != nil -> trace(pid, opts, s)
      module? -> trace_module(name, opts, s)
      true -> {{:error, {:unknown_target, name}}, s}
    end
  end

  # A GenServer-like process: its callbacks' results become :state events, starting from a
  # snapshot taken now (before its trace flags are set, so the snapshot's own system messages
  # are not traced).
  # Another tool's pattern on one of its callbacks is not overwritten unless `override?`: the
  # trace is refused instead, saying which (`states: false` traces the process without states).
  defp watch_states(pid, override?, s) do
    case Tracer.state_module(pid) do
      nil ->
        {:ok, s}

      mod ->
        case watch_module_states(mod, override?, s) do
          {:ok, s} ->
            Tracer.snapshot_state(pid, s.store)
            {:ok, s}

          {:error, {:pattern_in_use, _}} = e ->
            e

          _ ->
            {:ok, s}
        end
    end
  end

  # Records `mod`'s callback results as states (once per module).
  defp watch_module_states(mod, override?, s) do
    if mod in s.state_modules do
      {:ok, s}
    else
      with :ok <- Tracer.watch_state_module(mod, s.store, override?) do
        send(s.janitor, {:traced_module, mod})
        {:ok, %{s | state_modules: MapSet.put(s.state_modules, mod)}}
      end
    end
  end

  # Processes that start a GenServer-like process while traced tell the server (see
  # handle_info/2 for :elixir_scope_state_server).
  defp watch_new(%{watch_new: true} = s), do: s
  defp watch_new(s), do: %{s | watch_new: Tracer.hook_state_servers()}

  # trace(:all): every GenServer-like process running now that ElixirScope may trace (not its
  # own, not another tracer's) has its module watched and its state snapshotted. Both passes
  # run a few processes at a time, off the server, each process given at most a second and a
  # half (one busy in a long callback is skipped rather than waited for) and each pass at most
  # @all_deadline ms in all, so that a node of many busy processes answers trace(:all) in
  # time. `caller` is the process waiting for this trace call: asking it for its state would
  # wait for the answer it waits for.
  @all_deadline 10_000

  defp watch_running(s, caller) do
    own = [caller | own_processes(s)]
    store = s.store

    servers =
      for pid <- Process.list() -- own, Tracer.free?(pid) or Tracer.ours?(pid, store) do
        pid
      end
      |> bounded(fn pid -> {pid, Tracer.state_module(pid)} end)
      |> Enum.filter(&match?({_, mod} when mod != nil, &1))

    s =
      servers
      |> Enum.map(&elem(&1, 1))
      |> Enum.uniq()
      |> Enum.reduce(s, fn mod, s ->
        case watch_module_states(mod, false, s) do
          {:ok, s} -> s
          _ -> s
        end
      end)

    for({pid, mod} <- servers, mod in s.state_modules, do: pid)
    |> bounded(&Tracer.snapshot_state(&1, store))

    s
  end

  # `fun` of each of `items`, 8 at a time in untraced helper processes, each at most 1.5 s and
  # all within @all_deadline ms: the results that came in time.
  defp bounded(items, fun) do
    deadline = System.monotonic_time(:millisecond) + @all_deadline

    items
    |> Task.async_stream(fn x -> untraced(fn -> fun.(x) end) end,
      max_concurrency: 8,
      timeout: 1_500,
      on_timeout: :kill_task,
      ordered: false
    )
    |> Stream.take_while(fn _ -> System.monotonic_time(:millisecond) < deadline end)
    |> Enum.flat_map(fn
      {:ok, result} -> [result]
      {:exit, _} -> []
    end)
  end

  # Snapshots `pid`'s state from a short-lived process, so that the server never waits for a
  # process still in its init/1.
  defp snapshot_later(pid, store) do
    spawn(fn -> untraced(fn -> Tracer.snapshot_state(pid, store, 5_000) end) end)
  end

  # Runs `fun` in a process that is not traced itself (a helper spawned while new processes
  # are traced would be).
  defp untraced(fun) do
    _ = :erlang.trace(self(), false, [:all])
    fun.()
  end

  defp with_module({:ok, s}, mod, opts), do: trace_module(mod, opts, s)
  defp with_module(error, _mod, _opts), do: error

  defp trace_module(mod, opts, s) do
    locals? = Keyword.get(opts, :locals, false)

    case Tracer.trace_module(mod, locals?, Keyword.get(opts, :override, false)) do
      {:ok, _n} ->
        # A GenServer callback module: its processes' states are recorded too.
        s =
          if Keyword.get(opts, :states, true) and
               (Tracer.callback_module?(mod) or Tracer.statem_module?(mod)) and
               Tracer.watch_state_module(mod, s.store) == :ok,
             do: %{s | state_modules: MapSet.put(s.state_modules, mod)},
             else: s

        # Recorded before anything else can fail, so every cleanup path removes the pattern.
        send(s.janitor, {:traced_module, mod})
        s = %{s | modules: Map.put(s.modules, mod, locals?)}
        call_everywhere(s)

      error ->
        {error, s}
    end
  end

  # Calls are only reported for processes with the :call flag: give it to everyone.
  defp call_everywhere(s) do
    case Tracer.trace_all(s.store, [:call], own_processes(s)) do
      {:ok, %{skipped: skipped}} -> {:ok, %{s | skipped: Enum.uniq(s.skipped ++ skipped)}}
      error -> {error, s}
    end
  end

  # After untracing module `mod`: its states stay recorded only for processes still traced
  # for themselves (their callbacks' patterns are set again; untrace_module cleared them).
  defp still_watched(mod, s) do
    cond do
      mod not in s.state_modules ->
        s.state_modules

      (s.all or Enum.any?(s.pids, &(Tracer.state_module(&1) == mod))) and
          Tracer.watch_state_module(mod, s.store) == :ok ->
        s.state_modules

      true ->
        MapSet.delete(s.state_modules, mod)
    end
  end

  defp untrace(pid, s) when is_pid(pid) do
    Tracer.untrace_pid(pid, s.store)
    {:ok, %{s | pids: MapSet.delete(s.pids, pid)}}
  end

  defp untrace(:all, s) do
    Tracer.untrace_all(s.store)
    # Process selectors go too: they would trace processes again.
    selectors = Enum.reject(s.selectors, &match?({{:processes_running, _}, _}, &1))
    s = %{s | pids: MapSet.new(), all: false, new: false, selectors: selectors, selected: %{}}
    # Traced modules stay traced (status says so): their calls need :call everywhere again.
    if map_size(s.modules) > 0, do: call_everywhere(s), else: {:ok, s}
  end

  defp untrace(:new, s) do
    Tracer.untrace_new(s.store)
    {:ok, %{s | new: false}}
  end

  defp untrace({:processes_running, mods} = sel, s) do
    s = %{
      s
      | selectors: List.keydelete(s.selectors, sel, 0),
        selected: Map.delete(s.selected, sel)
    }

    s =
      Enum.reduce(s.pids, s, fn pid, s ->
        if running?(pid, mods), do: elem(untrace(pid, s), 1), else: s
      end)

    {:ok, s}
  end

  defp untrace({:modules_exporting, funs} = sel, s) do
    s = %{s | selectors: List.keydelete(s.selectors, sel, 0)}

    s =
      Enum.reduce(Map.keys(s.modules), s, fn mod, s ->
        if Enum.any?(funs, fn {f, a} -> function_exported?(mod, f, a) end),
          do: elem(untrace(mod, s), 1),
          else: s
      end)

    {:ok, s}
  end

  defp untrace(name, s) when is_atom(name) do
    s =
      case Process.whereis(name) do
        nil -> s
        pid -> elem(untrace(pid, s), 1)
      end

    if Map.has_key?(s.modules, name) do
      Tracer.untrace_module(name)
      s = %{s | modules: Map.delete(s.modules, name), state_modules: still_watched(name, s)}
      # The last module gone: release the processes that were only traced for calls.
      if map_size(s.modules) == 0 and not s.all, do: Tracer.untrace_call_only(s.store)
      {:ok, s}
    else
      {:ok, s}
    end
  end

  defp start_governor(opts, store) do
    {:ok, pid} = ElixirScope.Governor.start_link({opts, store, self()})
    pid
  end

  # A selector is resolved again every second (the first time arms the timer).
  defp select(sel, opts, s) do
    if s.selectors == [], do: Process.send_after(self(), :reselect, 1_000)

    if List.keymember?(s.selectors, sel, 0),
      do: s,
      else: %{s | selectors: [{sel, opts} | s.selectors]}
  end

  # Whether `pid` runs one of `mods`: its GenServer-like callback module, or its initial call.
  defp running?(pid, mods) do
    Tracer.state_module(pid) in mods or
      case Process.info(pid, :dictionary) do
        {:dictionary, d} -> initial_module(d[:"$initial_call"]) in mods
        nil -> false
      end
  end

  defp initial_module({m, _, _}), do: m
  defp initial_module(_), do: nil

  # The first error of a selector's many traces (a process that exited meanwhile is none).
  defp keep_first(:ok, {{:error, {:dead_process, _}}, s}), do: {:ok, s}
  defp keep_first(:ok, {reply, s}), do: {reply, s}
  defp keep_first(error, {_, s}), do: {error, s}

  # What a watch needs captured: calls of functions (patterns set unless the module is traced
  # already), or the messages of a process (traced unless it is already).
  defp watch({:calls, {mod, _, _} = spec, returns?, stack?}, s) do
    cond do
      true ->
        # A traced module's patterns have returns already; they gain callers if asked.
        returns? = returns? or Map.has_key?(s.modules, mod)

        case Tracer.trace_functions(Tracer.functions_of(spec), returns?, stack?) do
          {:ok, set} ->
            send(s.janitor, {:traced_module, mod})
            s = %{s | watch_patterns: MapSet.union(s.watch_patterns, MapSet.new(set))}

            case call_everywhere(s) do
              {:ok, s} -> {:ok, s}
              {error, s} -> {error, release_patterns(set, s)}
            end

          error ->
            {error, s}
        end
    end
  end

  defp watch({:messages, pid}, s) do
    cond do
      pid in own_processes(s) ->
        {{:error,
          {:refused, pid, "ElixirScope's own process: watching it would trace the tracer"}}, s}

      s.all or pid in s.pids ->
        {:ok, s}

      true ->
        case trace(pid, [children: false], s) do
          {:ok, s} -> {:ok, %{s | watch_traced: MapSet.put(s.watch_traced, pid)}}
          {error, s} -> {error, s}
        end
    end
  end

  defp unwatch(pid, s) do
    {entry, watches} = Map.pop(s.watches, pid)
    s = %{s | watches: watches}

    case entry do
      %{what: {:calls, spec, _, _}} ->
        s = release_patterns(Tracer.functions_of(spec), s)

        if map_size(s.modules) == 0 and not s.all and
             not Enum.any?(Map.values(watches), &match?(%{what: {:calls, _, _, _}}, &1)),
           do: Tracer.untrace_call_only(s.store)

        s

      %{what: {:messages, target}} ->
        needed? = Enum.any?(Map.values(watches), &(&1.what == {:messages, target}))

        if target in s.watch_traced and not needed?,
          do:
            elem(untrace(target, %{s | watch_traced: MapSet.delete(s.watch_traced, target)}), 1),
          else: s

      _ ->
        s
    end
  end

  # Clears the watch patterns among `mfas` that no other watch needs (nor a module trace).
  defp release_patterns(mfas, s) do
    needed =
      for %{what: {:calls, spec, _, _}} <- Map.values(s.watches),
          mfa <- Tracer.functions_of(spec),
          into: MapSet.new(),
          do: mfa

    clear =
      for mfa <- mfas,
          mfa in s.watch_patterns,
          mfa not in needed,
          not module_covers?(s, mfa),
          do: mfa

    Tracer.untrace_functions(clear)
    s = %{s | watch_patterns: MapSet.difference(s.watch_patterns, MapSet.new(clear))}

    # What stays gets exactly what is still asked of it: a watch's callers or returns gone
    # with it (a process dump at every call costs), a module trace's returns kept.
    for mfa <- mfas, mfa not in clear, do: repattern(mfa, s)
    s
  end

  defp repattern({mod, _, _} = mfa, s) do
    wants =
      for %{what: {:calls, spec, returns?, stack?}} <- Map.values(s.watches),
          mfa in Tracer.functions_of(spec),
          do: {returns?, stack?}

    module? = module_covers?(s, mfa)
    returns? = module? or Enum.any?(wants, &elem(&1, 0))
    stack? = Enum.any?(wants, &elem(&1, 1))
    # A module trace of exported functions only sets global patterns.
    local? = wants != [] or Map.get(s.modules, mod) == true
    Tracer.set_pattern(mfa, returns?, stack?, local?)
  end

  # Whether a module trace covers the function (all of them with locals: true).
  defp module_covers?(s, {mod, f, a}) do
    case Map.fetch(s.modules, mod) do
      {:ok, true} -> true
      {:ok, false} -> function_exported?(mod, f, a)
      :error -> false
    end
  end

  # The device a watch prints to, and the processes its output goes through.
  defp io_chain(io) do
    Enum.filter(
      [io | Enum.map([:user, :user_drv, :standard_error], &Process.whereis/1)],
      &is_pid/1
    )
  end

  # No call tracing for a process that prints (unless it was traced for itself).
  defp quiet(pid, store) do
    if not Tracer.traced_for_itself?(pid, store), do: Tracer.untrace_pid(pid, store)
  end

  defp own_processes(s) do
    [
      self(),
      s.janitor
      | Map.keys(s.watches) ++
          Enum.flat_map(Map.values(s.watches), &io_chain(&1.io)) ++
          List.wrap(s.governor) ++
          List.wrap(s.flusher) ++
          List.wrap(s.keeper) ++
          Enum.flat_map(
            [ElixirScope.Supervisor, ElixirScope.AppSupervisor],
            &List.wrap(Process.whereis(&1))
          ) ++ ElixirScope.UI.own_processes()
    ]
  end
end
