defmodule ElixirScope do
  @moduledoc """
  Runtime introspection for the BEAM: capture what your processes do — spawns, links, exits,
  messages, function calls with arguments, returns and exceptions — into a bounded native store,
  and ask `ElixirScope.Query` what happened.

  ## A session

      iex> {:ok, _} = ElixirScope.start(max_events: 100_000)
      iex> {:ok, counter} = Agent.start(fn -> 0 end)
      iex> :ok = ElixirScope.trace(counter)
      iex> Agent.update(counter, &(&1 + 1))
      iex> ElixirScope.Query.timeline(counter) |> Enum.map(& &1.kind)
      [:state, :traced, :receive, :call, :return, :state, :send]
      iex> {:ok, state} = ElixirScope.Query.state_at(counter, :now)
      iex> state
      1
      iex> ElixirScope.stop()
      :ok

  ## What is captured

  `trace/2` takes a pid, a registered name, `:all` (every process, and those spawned later),
  `:new` (processes spawned from now on) or a module (its function calls, arguments, results and
  exceptions, in every process). See `ElixirScope.Event` for the event shapes.

  ## Levels and sampling

  `:tracing_level` selects kinds: `:full` (all), `:messages_only` (`:send`, `:send_to_dead`,
  `:receive`, `:timeout`), `:states_only` (`:state`, `:supervisor`, `:exit`), `:minimal` (`:spawn`,
  `:exit`, `:register`, `:unregister`) and `:off`. `:sample_rate` keeps a fraction:
  with `sample_by: :process` (default) a process is kept or skipped as a whole, decided by a hash
  of its pid, so kept processes have complete stories; with `sample_by: :event`, exactly
  `floor(n * rate)` of the first `n` events are kept, evenly spread. Both are decided natively in
  the tracer's `enabled/3` callback, before any copying, and both can change while tracing runs
  (`set_level/1`, `set_sampling/2`).

  ## Safety

  * Capture never blocks a traced process: the tracer is a NIF that runs in the traced process and
    writes into a lock-free log. When the log is full, new events are dropped and counted
    (`status().dropped`), or, with `overflow: :evict_oldest`, the oldest are evicted
    (`status().evicted`); memory stays within `max_events` × 64 bytes + `max_bytes`, rounded
    up to whole chunks (256 KiB or 2 MiB) plus one chunk of each committed ahead of the writers
    (see `ElixirScope.Store`).
  * Payloads over `max_payload_bytes` keep their size, a hash and a prefix (`status().truncated`).
  * A process already traced by another tool (`:dbg`, recon, a profiler) is left alone and listed
    in `status().skipped`; ElixirScope never takes another tracer's processes.
  * `stop/0` clears every trace flag and pattern ElixirScope set, also when its server crashes.
    The captured events stay queryable until the next `start/1`.
  * Tracing ElixirScope itself or the VM's own modules (`:erlang`, `:erts_internal`, ...) is
    refused.
  """

  alias ElixirScope.{Args, Options, Server, Store}

  @typedoc "A tracing level, see the module docs."
  @type tracing_level :: :full | :messages_only | :states_only | :minimal | :off

  @typedoc "What `trace/2` and `untrace/1` accept."
  @type target ::
          pid()
          | atom()
          | {:global, term()}
          | {:via, module(), term()}
          | :all
          | :new
          | {:processes_running, [module()]}
          | {:modules_exporting, keyword(non_neg_integer())}

  @typedoc "The map `status/0` returns."
  @type status :: %{
          required(:running) => boolean(),
          required(:events) => non_neg_integer(),
          required(:dropped) => non_neg_integer(),
          required(:truncated) => non_neg_integer(),
          required(:bytes) => non_neg_integer(),
          required(:capacity) => non_neg_integer(),
          required(:tracing_level) => tracing_level(),
          required(:sample_rate) => float(),
          required(:traced) => map(),
          optional(atom()) => term()
        }

  @doc """
  Starts capturing into a new store, which becomes the default store of every query.

  Nothing is traced until `trace/2` is called (or the `:trace` option names targets).

  ## Options

    * `:tracing_level` - `:full` (default), `:messages_only`, `:states_only`, `:minimal`, `:off`.
    * `:sample_rate` - `0.0..1.0`, fraction kept (default `1.0`).
    * `:sample_by` - `:process` (default) or `:event`.
    * `:max_events` - events kept at most (default `1_000_000`); later events are dropped and
      counted.
    * `:max_bytes` - payload bytes kept at most (default 256 MiB).
    * `:overflow` - what a full store does: `:drop_newest` (default) drops new events and
      counts them; `:evict_oldest` keeps the newest events, evicting the oldest an eighth of
      the budget at a time (a ring: memory stays bounded without `:persist`, which it cannot
      be combined with). See `ElixirScope.Store.new!/1`.
    * `:max_payload_bytes` - per-event payload cap (default `4096`). States are kept whole up
      to 256 KiB whatever it is (stored as changes to the process's previous state).
    * `:trace` - a list of targets to trace right away, as with `trace/2` (default `[]`).
    * `:ui` - also serve the web UI: `true`, or the options of `ElixirScope.UI.start/1`
      (`ui: [port: 4040]`); its URL is printed. A UI that cannot start (its port is taken)
      stops the capture and returns `{:error, {:ui, reason}}`. `stop/0` leaves the UI up, on
      the stopped capture; `ElixirScope.UI.stop/0` stops it.
    * `:persist` - also write the capture to disk, as it is stored, into a trace directory
      that `open/2` reads back (default: off). A keyword list:
      * `:dir` - the directory (required; it must not hold a trace yet);
      * `:segment_bytes` - start a new segment file after this many bytes (default 64 MiB, at
        most 1 GiB);
      * `:segment_age` - ... or after its events span this many seconds (default: no limit);
      * `:max_bytes` - delete the oldest segments while the trace on disk is larger (default:
        no limit; the store's own `:max_bytes` is its payload memory);
      * `:max_age` - delete segments whose events are older than this many seconds, counted
        from the newest event (default: no limit);
      * `:archive` - compress each segment (lz4) once it is full (default `false`);
      * `:flush_interval` - milliseconds between writes (default `100`): what a crash of
        the VM can lose. `stop/0` writes the rest and seals the trace;
      * `:follow_bytes` - memory that the events `store: :trace` queries read back from the
        trace may hold, past which they start over with a fresh reader (default: the store's own
        `max_events × 64 + max_bytes`). The index of the trace on disk comes on top (8 to
        24 bytes per event on disk).

      A persisted capture is not limited by `:max_events`/`:max_bytes`: once its store is
      half full (and all of it on disk), it goes on in a fresh store, which becomes the
      default one, and the full one is let go. Queries (without `:store`) read the current
      store, in memory; `store: :trace` reads every event the capture wrote, from its trace
      on disk as far as it needs, the index from segment footers and the events a block at a
      time (seqs are the trace's, continuing across stores; `status/0` counts the current
      store). A query never writes: what the flusher has not written yet is in memory only,
      and `flush/0` writes it. Each store must hold a few flush intervals of events, or it
      fills before the switch and drops (and counts) the rest.

  * `:profile` - start from a named set of these options (`:lightweight_production`,
    `:deep_dive_dev`, `:phoenix_focus`, or one of the config's), the other options given
    taking precedence. See `ElixirScope.Profile`.
  * `:metrics`, `:load`, `:triggers` - sample process metrics into the store, thin the
    capture under load, raise its detail for a window when something happens. See
    `ElixirScope.Governor`.
  * `:max_time`, `:max_rate`, `:on_limit` - hard caps: how long the capture may run, how
    many events it may store per window (`{n, ms}`, enforced by the tracer itself), and
    whether reaching one stops it (`:stop`, default) or lowers its level (`{:level,
    :minimal}`). See `ElixirScope.Limits`.

  Invalid options raise `ArgumentError` naming the option and the allowed values.

  Returns `{:error, :already_running}` when a capture is running.
  """
  @spec start(keyword()) :: {:ok, pid()} | {:error, term()}
  def start(opts \\ []) do
    {profile, opts} = Keyword.pop(Args.opts!(opts), :profile)
    opts = if profile, do: ElixirScope.Profile.options!(profile, opts), else: opts

    opts =
      Options.validate!(
        opts,
        Options.store_defaults() ++
          [
            trace: [],
            persist: nil,
            ui: nil,
            max_time: nil,
            max_rate: nil,
            on_limit: :stop,
            metrics: nil,
            load: nil,
            triggers: []
          ]
      )

    limits = ElixirScope.Limits.options!(opts)
    governor = ElixirScope.Governor.options!(opts)
    opts = Keyword.drop(opts, [:max_time, :max_rate, :on_limit, :metrics, :load, :triggers])
    {ui, opts} = Keyword.pop(opts, :ui)
    ui = ui && ElixirScope.UI.options!(if(ui == true, do: [], else: ui))
    {targets, opts} = Keyword.pop(opts, :trace)
    # Checked before anything starts: a bad target must not leave a capture running.
    targets = targets |> List.wrap() |> Enum.map(&target!(&1, "start/1's :trace"))
    {persist, store_opts} = Keyword.pop(opts, :persist)
    _ = Options.store!(store_opts)
    persist = persist && ElixirScope.Persist.options!(persist)

    if persist && store_opts[:overflow] == :evict_oldest do
      raise ArgumentError,
            "overflow: :evict_oldest keeps the newest events in memory, and persist: keeps " <>
              "every event on disk (its store never fills): give one or the other"
    end

    {:ok, _} = Application.ensure_all_started(:elixir_scope)

    server_opts =
      [persist: persist, limits: limits, profile: profile, governor: governor] ++ store_opts

    case DynamicSupervisor.start_child(ElixirScope.Supervisor, {Server, server_opts}) do
      {:ok, pid} ->
        with {:ok, pid} <- trace_each(targets, pid), do: start_ui(ui, pid)

      {:error, {:already_started, _}} ->
        {:error, :already_running}

      {:error, {:persist, reason}} ->
        {:error, reason}

      {:error, _} = error ->
        error
    end
  end

  defp start_ui(nil, pid), do: {:ok, pid}

  defp start_ui(opts, pid) do
    case ElixirScope.UI.start(opts) do
      {:ok, %{url: url}} ->
        IO.puts("ElixirScope UI at #{url}")
        {:ok, pid}

      {:error, reason} ->
        stop()
        {:error, {:ui, reason}}
    end
  end

  defp trace_each([], pid), do: {:ok, pid}

  defp trace_each([t | rest], pid) do
    case trace(t) do
      :ok -> trace_each(rest, pid)
      {:error, _} = e -> stop() && e
    end
  end

  @doc """
  Stops capturing: clears every trace flag and pattern ElixirScope set and closes the store.
  The captured events stay queryable (it remains the default store) until the next `start/1`.
  """
  @spec stop() :: :ok
  def stop do
    case Process.whereis(Server) do
      nil -> :ok
      pid -> DynamicSupervisor.terminate_child(ElixirScope.Supervisor, pid) && :ok
    end
  end

  @doc """
  Saves a trace: writes every event of the current (or last) capture, or of `store: store`,
  into the directory `path`, which must not exist yet or be empty (for a persisted capture:
  every event its trace holds, across its stores). Returns the seq of the last event written:
  the number of events for a capture whose seqs start at 1. `open/2` reads it back, here or on another machine.

  A capture that goes on while it saves is saved as it was when `save/2` began; a running
  persisted capture first writes what is pending to its trace, and an error doing so is the
  answer. `progress:`
  takes a function called with `(events_written, events_total)` as the events are written
  (about every 65 536 events, and once at the end).

  `path` is a non-empty UTF-8 string (or charlist); another path raises `ArgumentError`.
  """
  @spec save(Path.t(), keyword()) ::
          {:ok, non_neg_integer()}
          | {:error, ElixirScope.Error.file_reason() | :already_running | :not_running}
  def save(path, opts \\ []) do
    path = Args.path!(path, "path")
    opts = Options.validate!(opts, store: nil, progress: nil)

    # A running persisted capture is saved whole: what is pending is written first (by the
    # server, which owns writing), then its trace is read. A write that fails is the answer:
    # saving without it would leave the last events out, unsaid.
    with {:ok, store} <- store_to_save(opts[:store]) do
      ElixirScope.Persist.save(store, path, Keyword.take(opts, [:progress]))
    end
  end

  defp store_to_save(nil) do
    case Store.default() do
      %Store{trace_dir: dir} when dir != nil ->
        with {:ok, _} <- flush(), do: {:ok, ElixirScope.Query.store!(:trace)}

      _ ->
        {:ok, ElixirScope.Query.store!(nil)}
    end
  end

  defp store_to_save(store), do: {:ok, ElixirScope.Query.store!(store)}

  @doc """
  Like `save/2`, but returns the number of events and raises `ElixirScope.Error` (whose message
  names the file and what was wrong with it) on failure.

  ## Examples

      iex> dir = Path.join(System.tmp_dir!(), "escope-doc-save-#{System.unique_integer([:positive])}")
      iex> File.mkdir_p!(dir) && File.write!(Path.join(dir, "MANIFEST"), "x")
      iex> try do
      ...>   ElixirScope.save!(dir, store: ElixirScope.Store.new!())
      ...> rescue
      ...>   e in ElixirScope.Error -> e.reason == {:trace_exists, dir} and Exception.message(e) =~ "already holds a trace"
      ...> end
      true
  """
  @spec save!(Path.t(), keyword()) :: non_neg_integer()
  def save!(path, opts \\ []), do: ok!(save(path, opts))

  @doc """
  Like `open/2`, but returns the store and raises `ElixirScope.Error` (whose message names the
  file and what was wrong with it) on failure.

  ## Examples

      iex> try do
      ...>   ElixirScope.open!("/nonexistent/escope-trace")
      ...> rescue
      ...>   e in ElixirScope.Error -> {e.reason, Exception.message(e)}
      ...> end
      {{:enoent, "/nonexistent/escope-trace"}, "/nonexistent/escope-trace: no such file or directory"}
  """
  @spec open!(Path.t(), keyword()) :: Store.t()
  def open!(path, opts \\ []), do: ok!(open(path, opts))

  defp ok!({:ok, value}), do: value
  defp ok!({:error, reason}), do: raise(ElixirScope.Error, reason: reason)

  @doc """
  Opens a saved or persisted trace (a directory, or one segment file) as a read-only store.
  Every query takes it as `store:` and answers as it did on the store the trace came from; a
  capture cut short by a crash opens with every event written before the crash.

  ## Options

    * `:default` - also make it the default store of queries (default `false`; refused while
      a capture is running).
    * `:since`, `:until` - load only a time window (monotonic nanoseconds of the capture or
      `DateTime`s) and each process's last state before it; see `ElixirScope.Persist.open/2`.
    * `:progress` - a function called with `(bytes_read, bytes_total)` as segments load.

  `path` is a non-empty UTF-8 string (or charlist); another path, or invalid options, raise
  `ArgumentError`.

  ## Examples

      {:ok, store} = ElixirScope.open("/var/log/myapp/trace")
      ElixirScope.Query.timeline(pid, store: store)
      ElixirScope.Persist.info(store).dropped
  """
  @spec open(Path.t(), keyword()) ::
          {:ok, Store.t()} | {:error, ElixirScope.Error.file_reason() | :already_running}
  def open(path, opts \\ []) do
    path = Args.path!(path, "path")
    opts = Options.validate!(opts, default: false, progress: nil, since: nil, until: nil)
    Args.boolean!(opts[:default], :default)
    Args.fun!(opts[:progress], :progress, 2)

    if opts[:default] && running?() do
      {:error, :already_running}
    else
      with {:ok, store} <- ElixirScope.Persist.open(path, Keyword.delete(opts, :default)) do
        if opts[:default], do: Store.put_default(store)
        {:ok, store}
      end
    end
  end

  @doc """
  Writes what a persisted capture has not written to its trace yet (the flusher does every
  `flush_interval` ms): `{:ok, dir}`. `{:error, :not_persisted}` for a capture without
  `persist:`, `{:error, :not_running}` with no capture. Queries never write: after this,
  `store: :trace` queries see every event captured so far.
  """
  @spec flush() :: {:ok, Path.t()} | {:error, :not_persisted | :not_running | term()}
  def flush do
    case call_server(:flush) do
      :none -> {:error, :not_persisted}
      other -> other
    end
  end

  @doc """
  Opens what a running persisted capture has written so far, as a read-only store of its own:
  every event since it started, across every store it has used (what `store: :trace` queries
  read too). Has the server write what is pending first. Opens as `open/2` of the directory
  does.

  Takes the options of `open/2` but `:default`: `since:` loads only the recent past into memory.

  Returns `{:error, :not_persisted}` for a capture without `persist:` (or whose writing
  stopped on an error), `{:error, :not_running}` with no capture.
  """
  @spec open_persisted(keyword()) :: {:ok, Store.t()} | {:error, term()}
  def open_persisted(opts \\ []) do
    opts = Options.validate!(opts, progress: nil, since: nil, until: nil)
    Args.fun!(opts[:progress], :progress, 2)

    case Process.whereis(Server) && safe_call(Process.whereis(Server), :flush) do
      nil -> {:error, :not_running}
      {:ok, dir} -> ElixirScope.Persist.open(dir, opts)
      {:error, _} = e -> e
      :none -> {:error, :not_persisted}
    end
  end

  @doc "Whether a capture is running."
  @spec running?() :: boolean()
  def running?, do: Process.whereis(Server) != nil

  @doc """
  Counters and settings of the current (or last) capture.

  Keys: `:running`, `:events`, `:dropped`, `:truncated`, `:bytes` (memory committed),
  `:payload_bytes`, `:capacity` (max events), `:max_bytes`, `:max_payload_bytes`,
  `:tracing_level`, `:sample_rate`, `:sample_by`, `:last_seq` (the newest seq handed out),
  `:published_seq` (the newest below which every event is readable: what a query sees), `:traced` (`%{pids: [...], all:
  boolean, new: boolean, modules: [...], state_modules: [...], lost_patterns: [mfa]}`, where
  `lost_patterns` are functions whose trace pattern ElixirScope set and another tool such as
  `:dbg` cleared or replaced since: their calls and states are no longer captured), `:skipped`
  (processes left to another tracer),
  `:persist_dir` (where `persist:` writes the capture, or `nil`), `:persisted` (events written
  there so far), `:generation` (how many stores the capture has used: a persisted capture
  goes on in a fresh store each time its store is half full), `:profile` (the profile it was
  started with, or `nil`), `:limits` (its `ElixirScope.Limits` as a map, with the limits
  reached so far under `:tripped`), `:rate_cap` and `:rate_tripped` (the native rate cap and
  whether it tripped), and, once stopped, `:stopped_by` (`{limit, value}` when a limit stopped
  it).
  """
  @spec status() :: status()
  def status do
    with pid when pid != nil <- Process.whereis(Server),
         {store, traced, skipped, more} <- safe_call(pid, :status) do
      Store.stats(store)
      |> Map.merge(%{
        running: true,
        traced: traced,
        skipped: skipped,
        stopped_by: nil,
        governor: ElixirScope.Governor.info()
      })
      |> Map.merge(more)
    else
      _ -> idle_status()
    end
  end

  defp idle_status do
    stats =
      case Store.default() do
        nil ->
          d = Options.store_defaults()

          %{
            events: 0,
            dropped: 0,
            truncated: 0,
            bytes: 0,
            payload_bytes: 0,
            last_seq: 0,
            published_seq: 0,
            persisted: 0,
            rate_cap: nil,
            rate_tripped: false,
            capacity: d[:max_events],
            max_bytes: d[:max_bytes],
            max_payload_bytes: d[:max_payload_bytes],
            tracing_level: :off,
            sample_rate: 1.0,
            sample_by: :process
          }

        store ->
          Store.stats(store)
      end

    Map.merge(stats, %{
      running: false,
      persist_dir: nil,
      generation: 1,
      profile: nil,
      limits: nil,
      governor: nil,
      stopped_by: Application.get_env(:elixir_scope, :stopped_by),
      traced: %{
        pids: [],
        all: false,
        new: false,
        modules: [],
        state_modules: [],
        lost_patterns: []
      },
      skipped: []
    })
  end

  @doc """
  Traces `target` into the running capture.

  * a pid - its lifecycle, messages, and calls of traced modules; processes it spawns from now on
    are traced too unless `children: false`.
  * a registered name - the process registered under it; `{:global, name}` and `{:via,
    module, name}` name the process they resolve to now. If the name is also a module (a
    GenServer registered as `__MODULE__`), its functions are call-traced as well; `as: :process`
    or `as: :module` picks one.
  * `:all` - every process (except ElixirScope's own and those with another tracer), and every
    process spawned later.
  * `:new` - processes spawned from now on.
  * `{:processes_running, modules}` - every process whose GenServer-like callback module (or
    initial call) is one of `modules`, now and as they appear (checked every second).
  * `{:modules_exporting, [fun: arity]}` - every loaded module exporting one of these
    functions (`[__live__: 0]`: Phoenix LiveViews), traced as modules, now and as they load
    (checked every second).
  * a module - calls of its exported functions (all functions with `locals: true`), with
    arguments, return values and exceptions, in every process.

  ## Options

    * `:children` - for pids, also trace processes they spawn (default `true`).
    * `:locals` - for modules, trace private functions too (default `false`).
    * `:as` - `:auto` (default), `:process` or `:module`, for atoms.
    * `:states` - record the state of GenServer-like processes (GenServers, supervisors,
      agents) after every callback, as `:state` events (default `true`): their callback module's
      `init/1`, `handle_call/3`, `handle_cast/2`, `handle_info/2`, `handle_continue/2` and
      `code_change/3` are return-traced, and a `:sys.get_state/2` snapshot is taken when a
      running process starts being traced, whichever way it came to be traced (a pid, a
      name, `:all`, or afterwards as a child of a traced process or under `:new`). For a
      module target, processes running it. A process started while traced, whose callback
      module is not watched yet, is seen as it starts (before its `init/1`); its module is
      watched from then on and its state snapshotted once, so its first callbacks (those
      before the snapshot) are covered by that snapshot rather than recorded one by one. (A
      process that becomes a server by `:gen_server.enter_loop/3` or `:gen_statem.enter_loop/4`
      starts no `init/1` and is not seen starting: trace it, or its module, once it runs.)
    * `:override` - trace patterns are global to the VM: a function whose pattern another tool
      (`:dbg`, recon, a profiler) set is left alone, and the call answers
      `{:error, {:pattern_in_use, mfas}}`; `override: true` replaces those patterns
      (default `false`). ElixirScope only ever clears patterns that are still its own.

  ## Errors

    * `{:error, :not_running}`
    * `{:error, {:dead_process, pid}}`, `{:error, {:remote_pid, pid}}`
    * `{:error, {:unknown_target, atom}}` - neither a registered name nor a loadable module
    * `{:error, {:already_traced, pid, tracer}}` - another tool traces it
    * `{:error, {:refused, module, why}}` - ElixirScope itself or VM internals
    * `{:error, {:pattern_in_use, [mfa]}}` - another tool's trace patterns (see `:override`)

  Other argument shapes raise `ArgumentError`.
  """
  @spec trace(target(), keyword()) :: :ok | {:error, term()}
  def trace(target, opts \\ [])

  def trace(target, opts) do
    trace_resolved(target!(target, "trace/2"), opts)
  catch
    {:unknown_target, name} -> {:error, {:unknown_target, name}}
  end

  defp trace_resolved(target, opts) do
    opts =
      Options.validate!(opts,
        children: true,
        locals: false,
        as: :auto,
        states: true,
        override: false
      )

    Enum.each([:children, :locals, :states, :override], &Args.boolean!(opts[&1], &1))

    unless opts[:as] in [:auto, :process, :module] do
      raise ArgumentError,
            "invalid :as #{inspect(opts[:as])}, expected :auto, :process or :module"
    end

    call_server({:trace, target, opts})
  end

  defp target!(target, _who) when is_pid(target) or is_atom(target), do: target

  defp target!({:processes_running, mods} = t, who) do
    if is_list(mods) and mods != [] and Enum.all?(mods, &is_atom/1),
      do: t,
      else: Args.bad!("#{who} target", t, "{:processes_running, [module]}")
  end

  defp target!({:modules_exporting, funs} = t, who) do
    if is_list(funs) and funs != [] and
         Enum.all?(funs, &match?({f, a} when is_atom(f) and is_integer(a) and a >= 0, &1)),
       do: t,
       else: Args.bad!("#{who} target", t, "{:modules_exporting, [fun: arity]}")
  end

  # A global or via name: the process it names now.
  defp target!({:global, _} = name, who), do: via!(name, who)
  defp target!({:via, mod, _} = name, who) when is_atom(mod), do: via!(name, who)

  defp target!(target, who) do
    raise ArgumentError,
          "#{who} expects a pid, a registered name, {:global, name}, {:via, module, name}, " <>
            "a module, :all or :new, got: #{inspect(target)}"
  end

  defp via!(name, who) do
    ElixirScope.Query.Names.resolve!(name, nil, "#{who} target")
  rescue
    ArgumentError -> throw({:unknown_target, name})
  end

  @doc "Like `trace/2`, but raises `ElixirScope.Error` on failure."
  @spec trace!(target(), keyword()) :: :ok
  def trace!(target, opts \\ []) do
    case trace(target, opts) do
      :ok -> :ok
      {:error, reason} -> raise ElixirScope.Error, reason: reason
    end
  end

  @doc """
  Stops tracing `target` (same shapes as `trace/2`). Events already captured stay.
  """
  @spec untrace(target()) :: :ok | {:error, :not_running | {:unknown_target, term()}}
  def untrace(target) do
    call_server({:untrace, target!(target, "untrace/1")})
  catch
    {:unknown_target, name} -> {:error, {:unknown_target, name}}
  end

  @doc "Changes the tracing level of the running capture; takes effect at once."
  @spec set_level(tracing_level()) :: :ok | {:error, :not_running}
  def set_level(level) do
    level = Options.level!(level)
    with_store(&Store.set_level(&1, level))
  end

  @doc "Changes sampling of the running capture; takes effect at once."
  @spec set_sampling(number(), :process | :event) :: :ok | {:error, :not_running}
  def set_sampling(rate, by \\ :process) do
    rate = Options.sample_rate!(rate)
    by = Options.sample_by!(by)
    with_store(&Store.set_sampling(&1, rate, by))
  end

  @doc """
  Prints matching calls as they happen, in one line, and stops by itself: after a count (10 by
  default), past a rate (`limit: {10, 1_000}`), or after a time (`time: 60_000` by default),
  whichever comes first, saying which. Returns `{:ok, watch}`; `unwatch/1` stops it early.

      ElixirScope.watch("MyApp.Repo.get(_, id) when id > 10", limit: 10, return: true)
      ElixirScope.watch("MyApp.Repo.get/2")
      ElixirScope.watch(":ets.lookup(MyApp.Cache, _)", limit: {20, 1_000})

  The pattern is Elixir syntax with a guard, validated and never evaluated; patterns that
  would endanger the node are refused. What is printed also lands in the store, so it can be
  queried afterwards; without a running capture the watch starts one, with a hard rate cap,
  and stops it when done. See `ElixirScope.Watch` for the options and the output.

  `watch(process, message_pattern, opts)` prints the messages a process (a pid or a
  registered name) sends and receives that match:

      ElixirScope.watch(MyApp.Bank, "{:deposit, n} when n > 100", limit: 5)

  ## Errors

  A bad pattern or option raises `ArgumentError` saying what is wrong and what is allowed.
  `{:error, reason}` otherwise: `{:pattern_in_use, mfas}` (another tool traces those
  functions), `{:unknown_target, name}`, `{:dead_process, pid}`, `{:already_traced, pid,
  tracer}`.
  """
  @spec watch(String.t() | pid() | atom(), keyword() | String.t()) ::
          {:ok, pid()} | {:error, term()}
  def watch(pattern, opts \\ [])

  def watch(pattern, opts) when is_binary(pattern), do: ElixirScope.Watch.calls(pattern, opts)
  def watch(process, pattern) when is_binary(pattern), do: watch(process, pattern, [])

  def watch(other, _opts) do
    raise ArgumentError,
          "ElixirScope.watch/2 expects a call pattern string, or a process and a message " <>
            "pattern string, got: #{inspect(other)}"
  end

  @doc """
  Starts a flight recorder: a capture of every process (the `:flight_recorder` profile) kept
  in memory as a ring of its newest events (`overflow: :evict_oldest`, with the last state of
  every live process carried along), that saves what it holds whenever a process crashes:
  `dir/crashes/trigger-<time>-<n>`, a trace `open/2` reads and
  `ElixirScope.Query.why_crashed/2` explains: the crashed process's last events, its last
  state and its exit. Nothing is written until a crash; memory stays within the store's
  budget. Leave it on; after a crash:

      {:ok, _} = ElixirScope.flight_recorder("/var/tmp/escope")
      # ... a crash later
      {:ok, trace} = ElixirScope.open("/var/tmp/escope/crashes/trigger-...")
      ElixirScope.Query.why_crashed(pid, store: trace)

  Options:

    * `:mode` - `:memory` (default), or `:disk`: the capture is written to disk under
      `dir/live-*` as it runs, with retention (`:keep_bytes` of trace, default 256 MiB), and a
      crash saves what is on disk; it keeps more history, at the cost of writing all the time;
    * `:dumps` - crash saves kept (default 20);
    * `:cooldown` - ms after a save before the next crash saves again (default 5,000);
    * any `start/1` option, which takes precedence over the profile's (`max_events:`,
      `max_bytes:`: how much the ring keeps).
  """
  @spec flight_recorder(Path.t(), keyword()) :: {:ok, pid()} | {:error, term()}
  def flight_recorder(dir, opts \\ []) do
    dir = Args.path!(dir, "dir")
    {mode, opts} = Keyword.pop(Args.opts!(opts), :mode, :memory)
    {keep_bytes, opts} = Keyword.pop(opts, :keep_bytes)
    {dumps, opts} = Keyword.pop(opts, :dumps, 20)
    {cooldown, opts} = Keyword.pop(opts, :cooldown, 5_000)
    crash = {:crash, save: Path.join(dir, "crashes"), for: cooldown, keep: dumps}

    keep =
      case mode do
        :memory when keep_bytes == nil ->
          [overflow: :evict_oldest]

        :memory ->
          raise ArgumentError, "flight_recorder/2's :keep_bytes is for mode: :disk"

        :disk ->
          live = Path.join(dir, "live-#{System.os_time(:millisecond)}")
          [persist: [dir: live, max_bytes: keep_bytes || 256 * 1024 * 1024]]

        other ->
          Args.bad!(:mode, other, ":memory or :disk")
      end

    # The caller's options take precedence over the recorder's.
    start(Keyword.merge([profile: :flight_recorder, triggers: [crash]] ++ keep, opts))
  end

  @doc "Prints the messages of `process` that match `pattern`; see `watch/2`."
  @spec watch(pid() | atom(), String.t(), keyword()) :: {:ok, pid()} | {:error, term()}
  def watch(process, pattern, opts), do: ElixirScope.Watch.messages(process, pattern, opts)

  @doc "Stops a watch (the pid `watch/2` returned), or every watch with `:all` (default)."
  @spec unwatch(pid() | :all) :: :ok
  def unwatch(watch \\ :all), do: ElixirScope.Watch.unwatch(watch)

  # Seed-compatible entry points.

  @doc "Seed-compatible alias of `start/1` that answers `:ok`."
  @spec setup(keyword()) :: :ok | {:error, term()}
  def setup(opts \\ []) do
    case start(opts) do
      {:ok, _} -> :ok
      error -> error
    end
  end

  @doc "Seed-compatible: call-traces `module` (see `trace/2`)."
  @spec trace_module(module(), keyword()) :: :ok | {:error, term()}
  def trace_module(module, opts \\ []),
    do: trace(Args.module!(module, "module"), Keyword.put(Args.opts!(opts), :as, :module))

  @doc "Seed-compatible: traces one GenServer by pid or registered name."
  @spec trace_genserver(pid() | atom(), keyword()) :: :ok | {:error, term()}
  def trace_genserver(server, opts \\ []) do
    unless is_pid(server) or is_atom(server),
      do: Args.bad!("server", server, "a pid or a registered name")

    trace(server, Keyword.put(Args.opts!(opts), :as, :process))
  end

  @doc """
  Seed-compatible: traces every running GenServer (processes started by `:gen_server` via
  `:proc_lib`), except ElixirScope's own. Returns how many were traced.
  """
  @spec trace_all_genservers() :: {:ok, non_neg_integer()} | {:error, term()}
  def trace_all_genservers do
    own = Process.whereis(Server)

    servers = for pid <- Process.list(), pid != own, genserver?(pid), do: pid

    case Enum.map(servers, &trace(&1, children: false)) do
      [{:error, :not_running} | _] -> {:error, :not_running}
      results -> {:ok, Enum.count(results, &(&1 == :ok))}
    end
  end

  defp genserver?(pid) do
    case Process.info(pid, [:dictionary, :current_function]) do
      [dictionary: dict, current_function: {:gen_server, _, _}] ->
        Keyword.has_key?(dict, :"$initial_call")

      _ ->
        false
    end
  end

  @doc "Seed-compatible: `trace(:all)`."
  @spec trace_all_processes() :: :ok | {:error, term()}
  def trace_all_processes, do: trace(:all)

  @doc "Seed-compatible: `ElixirScope.Query.state_timeline/2`, the recorded states of `pid`."
  @spec state_timeline(pid() | atom()) :: [ElixirScope.Event.t()]
  def state_timeline(pid), do: ElixirScope.Query.state_timeline(pid)

  @doc "Seed-compatible: `ElixirScope.Query.message_flow/3`, the messages `from` sent to `to`."
  @spec message_flow(pid() | atom(), pid() | atom()) :: [ElixirScope.Event.t()]
  def message_flow(from, to), do: ElixirScope.Query.message_flow(from, to)

  @doc "Seed-compatible: `ElixirScope.Query.execution_path/2`, the traced calls of `pid`."
  @spec execution_path(pid() | atom()) :: [ElixirScope.Event.t()]
  def execution_path(pid), do: ElixirScope.Query.execution_path(pid)

  defp call_server(msg) do
    case Process.whereis(Server) do
      nil -> {:error, :not_running}
      pid -> safe_call(pid, msg)
    end
  end

  defp safe_call(pid, msg) do
    GenServer.call(pid, msg, 60_000)
  catch
    :exit, _ -> {:error, :not_running}
  end

  defp with_store(fun) do
    case call_server(:store) do
      %Store{} = store -> fun.(store)
      error -> error
    end
  end
end
