defmodule ElixirScope.Persist do
  @moduledoc """
  Traces on disk: a capture written to segment files while it runs, a store saved after the
  fact, and a trace opened again, here or on another machine, as a read-only store that every
  query accepts (`store:`).

  A trace is a directory: segment files (`00000001.seg`, ... or `.seg.lz4` once archived) and a
  `MANIFEST` listing them in order. Each segment starts with a header (magic, format version)
  and holds frames `[length][crc32][record]`; a record is an event, the encoding of a process or
  atom the events name, the capture's clock or its counters. A crash can only tear the last frame
  of the last segment; opening a trace stops at the first incomplete or corrupt frame of a
  segment and keeps every complete frame before it.

      iex> dir = Path.join(System.tmp_dir!(), "escope-doc-#{System.unique_integer([:positive])}")
      iex> store = ElixirScope.Store.new!()
      iex> {:ok, 0} = ElixirScope.Persist.save(store, dir)
      iex> {:ok, opened} = ElixirScope.Persist.open(dir)
      iex> ElixirScope.Store.stats(opened).events
      0
      iex> File.rm_rf!(dir) |> length()
      3

  ## Terms of another VM

  Files are never trusted: lengths and checksums are verified, payloads are decoded without
  creating atoms, and a newer format version is refused with a message saying so. So a trace
  opened on another machine shows what that VM cannot represent with stand-ins:

    * an atom the reading VM does not know comes back as its name, a binary (`"Elixir.MyApp.Cart"`,
      `"checkout_started"`);
    * a pid, port or reference of a node the reading VM has no atom for stays a pid, port or
      reference, of a stand-in node `:elixir_scope_node_0`, `:elixir_scope_node_1`, ... (up to
      64), so it can be compared, matched and passed back to queries; `nodes/0` tells which
      node each stands for. So do all the pids of a trace captured by another run of a VM,
      even a VM of the same name: its `<0.85.0>` is not this VM's `<0.85.0>`. Only a trace
      opened in the VM run that captured it shows its processes as they are.
  """

  alias ElixirScope.{Native, Store}

  @defaults [
    dir: nil,
    segment_bytes: 64 * 1024 * 1024,
    segment_age: nil,
    max_bytes: nil,
    max_age: nil,
    archive: false,
    flush_interval: 100,
    follow_bytes: nil
  ]

  @typedoc "Options of `ElixirScope.start(persist: ...)`, see `ElixirScope.start/1`."
  @type options :: [
          dir: Path.t(),
          segment_bytes: pos_integer(),
          segment_age: pos_integer() | nil,
          max_bytes: pos_integer() | nil,
          max_age: pos_integer() | nil,
          archive: boolean(),
          flush_interval: pos_integer(),
          follow_bytes: pos_integer() | nil
        ]

  @typedoc "What `open/2` found, see `info/1`."
  @type report :: %{
          path: String.t(),
          events: non_neg_integer(),
          segments: non_neg_integer(),
          bytes: non_neg_integer(),
          first_seq: non_neg_integer(),
          torn: [String.t()],
          gaps: non_neg_integer(),
          dropped: non_neg_integer(),
          truncated: non_neg_integer(),
          foreign: non_neg_integer(),
          unknown_words: non_neg_integer(),
          discarded: non_neg_integer(),
          missing: non_neg_integer(),
          skipped: non_neg_integer(),
          carried: non_neg_integer(),
          paged: non_neg_integer(),
          renumbered: boolean(),
          damaged: [String.t()],
          unread: non_neg_integer(),
          manifest_rebuilt: boolean(),
          clock: {integer(), integer()} | nil
        }

  @max_i64 9_223_372_036_854_775_807
  @max_u64 18_446_744_073_709_551_615
  # Segments are read whole when a trace is opened; their index footer must stay readable.
  @max_segment_bytes 1024 * 1024 * 1024
  # Events written per flush call (a few tens of milliseconds on a dirty I/O scheduler).
  @flush_chunk 100_000

  @doc false
  # The validated `persist:` options.
  @spec options!(keyword()) :: map()
  def options!(opts) do
    # `history_bytes`, the option's earlier name, is still taken.
    opts =
      case ElixirScope.Args.opts!(opts) |> Keyword.pop(:history_bytes) do
        {nil, opts} -> opts
        {bytes, opts} -> Keyword.put_new(opts, :follow_bytes, bytes)
      end

    opts = ElixirScope.Options.validate!(opts, @defaults)

    dir =
      case opts[:dir] do
        d when is_binary(d) and d != "" -> Path.expand(d)
        other -> raise ArgumentError, "invalid persist :dir #{inspect(other)}, expected a path"
      end

    segment_bytes = pos!(opts, :segment_bytes) || @defaults[:segment_bytes]

    if segment_bytes > @max_segment_bytes do
      raise ArgumentError,
            "invalid persist :segment_bytes #{segment_bytes}, at most #{@max_segment_bytes}"
    end

    %{
      dir: dir,
      segment_bytes: segment_bytes,
      segment_ns: seconds_ns!(opts, :segment_age),
      max_bytes: pos!(opts, :max_bytes) || @max_u64,
      max_age_ns: seconds_ns!(opts, :max_age),
      archive: bool!(opts, :archive),
      flush_interval: pos!(opts, :flush_interval) || @defaults[:flush_interval],
      follow_bytes: pos!(opts, :follow_bytes)
    }
  end

  defp pos!(opts, key) do
    case opts[key] do
      nil ->
        nil

      n when is_integer(n) and n > 0 and n <= @max_i64 ->
        n

      other ->
        raise ArgumentError,
              "invalid persist #{inspect(key)} #{inspect(other)}, expected a positive integer"
    end
  end

  defp seconds_ns!(opts, key) do
    case pos!(opts, key) do
      nil -> @max_i64
      s -> min(s * 1_000_000_000, @max_i64)
    end
  end

  defp bool!(opts, key) do
    case opts[key] do
      b when is_boolean(b) ->
        b

      other ->
        raise ArgumentError,
              "invalid persist #{inspect(key)} #{inspect(other)}, expected a boolean"
    end
  end

  @doc false
  # Starts writing `store`'s events into `o.dir` (see options!/1); flush/1 does the writing.
  @spec start(Store.t(), map()) :: :ok | {:error, ElixirScope.Error.file_reason()}
  def start(store, o) do
    Native.persist_start(
      Store.ref(store),
      o.dir,
      o.segment_bytes,
      o.segment_ns,
      o.max_bytes,
      o.max_age_ns,
      o.archive
    )
  end

  @doc false
  # Writes every event stored so far; answers how many events the trace holds on disk.
  @spec flush(Store.t()) ::
          {:ok, non_neg_integer()} | :none | {:error, ElixirScope.Error.file_reason()}
  def flush(store) do
    case Native.persist_flush(Store.ref(store), @flush_chunk) do
      {:ok, @flush_chunk, _on_disk} -> flush(store)
      {:ok, _n, on_disk} -> {:ok, on_disk}
      other -> other
    end
  end

  # The store following the running capture's trace: {dir, store ref, bytes after its first
  # refresh, bytes it may hold or nil}. One per VM, replaced when a capture starts or when it
  # has read in too much.
  @follower_key {__MODULE__, :follower}
  # Events a following store must still have room for (of 2^34), else a fresh one replaces it.
  @follower_room 1_073_741_824

  @doc false
  # `store` (persisted as `o` says, see options!/1) with a store following its trace on disk.
  @spec with_follower(Store.t(), map()) :: Store.t()
  def with_follower(%Store{} = store, o) do
    case follow(o.dir, o.follow_bytes) do
      {:ok, _} -> %{store | trace_dir: o.dir}
      {:error, _} -> store
    end
  end

  @doc false
  # Lets go of the store following a capture's trace (a new capture starts).
  @spec forget_follower() :: :ok
  def forget_follower do
    _ = :persistent_term.get(@follower_key, nil) && :persistent_term.erase(@follower_key)
    :ok
  end

  defp follow(dir, budget) do
    with {:ok, ref} <- Native.disk_follow(dir),
         {:ok, _last, bytes, _room} <- Native.disk_follow_refresh(ref) do
      :persistent_term.put(@follower_key, {dir, ref, bytes, budget})
      {:ok, ref}
    end
  end

  @doc false
  # What `store: :trace` reads: for a persisted capture's `store`, every event its trace holds
  # on disk, whichever store of the capture held it (older ones are gone from memory), read by
  # a store that follows the trace from where the last such query left it. It reads only: what
  # the flusher has not written yet is not there (`ElixirScope.flush/0` writes it first). The
  # following store only grows (with the events queries read in): once those hold more than
  # its budget (and it has read half a budget since it was fresh: one that starts over big does
  # not start over at every query), or it nears the events it can hold, a fresh one replaces it
  # (starting at the oldest segment left). Its index (of the trace on disk) is not counted:
  # starting over would not make it smaller.
  @spec trace_store(Store.t()) :: {:ok, Store.t()} | {:error, :not_persisted}
  def trace_store(%Store{trace_dir: nil}), do: {:error, :not_persisted}

  def trace_store(%Store{trace_dir: dir} = store) do
    with {^dir, ref, fresh, budget} <- :persistent_term.get(@follower_key, nil),
         {:ok, _last, bytes, room} <- Native.disk_follow_refresh(Native.store_handle(ref)) do
      budget = budget || store_budget(store)

      ref =
        with true <- (bytes > budget and bytes > fresh + div(budget, 2)) or room < @follower_room,
             {:ok, renewed} <- follow(dir, budget) do
          renewed
        else
          _ -> ref
        end

      {:ok, %Store{ref: ref, time_offset: store.time_offset}}
    else
      _ -> {:error, :not_persisted}
    end
  end

  # The memory a capture's store may take: its slots and payload bytes.
  defp store_budget(store) do
    s = Store.stats(store)
    s.capacity * 64 + s.max_bytes
  end

  @doc false
  # Goes on writing the trace from `to`, a fresh store that replaces `from`.
  @spec move(Store.t(), Store.t()) ::
          {:ok, non_neg_integer()} | :none | {:error, ElixirScope.Error.file_reason()}
  def move(from, to) do
    Native.persist_move(Store.ref(from), Store.ref(to))
  end

  @doc false
  # Writes what is left and seals the trace.
  @spec finish(Store.t()) ::
          {:ok, non_neg_integer()} | :none | {:error, ElixirScope.Error.file_reason()}
  def finish(store) do
    Native.persist_finish(Store.ref(store))
  end

  @doc """
  Writes every event of `store` into the directory `path`, which must not exist or be empty.
  Returns the number of events written. See `ElixirScope.save/2`.

  ## Options

    * `:progress` - a function called with `(events_written, events_total)` as the events are
      written, about every 65 536 events.
  """
  @spec save(Store.t(), Path.t(), keyword()) ::
          {:ok, non_neg_integer()} | {:error, ElixirScope.Error.file_reason()}
  def save(store, path, opts \\ [])

  def save(%Store{} = store, path, opts) do
    path = ElixirScope.Args.path!(path, "path")
    opts = ElixirScope.Options.validate!(opts, progress: nil)
    progress = ElixirScope.Args.fun!(opts[:progress], :progress, 2) || fn _, _ -> :ok end
    ref = Store.ref(store)

    # (An opened trace is saved with the clock it was captured with.)
    with {:ok, saving, total} <- Native.disk_save_begin(ref, Path.expand(path)),
         :ok <- run_steps(fn -> Native.disk_save_step(saving, ref) end, total, progress) do
      result = Native.disk_save_finish(saving)
      if match?({:ok, _}, result), do: progress.(total, total)
      result
    end
  end

  def save(other, _path, _opts), do: ElixirScope.Args.bad_store!(other, "store")

  @doc """
  Opens a trace (a directory, or one segment file) as a read-only store.

  A directory whose sealed segments end with index footers (every trace this version writes)
  opens *paged*: the footers give the store its index, and the events stay on disk until a
  query first needs them, a block of about a thousand at a time. Opening costs the footers
  alone, and memory grows with what queries touch. A segment still being written (a running
  capture, or one that was killed) is scanned at once for its index. Other traces, and windows, are loaded
  whole; `info/1` says how many segments were left on disk (`:paged`).

  ## Options

    * `:since`, `:until` - load only the events of this time window (inclusive; monotonic
      nanoseconds of the capture, as events' `ts`, or `DateTime`s), plus each process's last
      state before it, so that states at the window's start are known. Memory and time go to
      the window; segments after it are not read. `info/1` counts what was `:skipped`.
    * `:progress` - a function called with `(bytes_read, bytes_total)` after each segment
      read (a paged open reads footers only, and reports their segments so), and once with
      `(bytes_total, bytes_total)` when the store is open.

  Returns `{:error, reason}` (see `t:ElixirScope.Error.file_reason/0`) when the path holds no
  trace this version can read, or the file system fails (`{:eacces, path}`, `{:emfile, path}`,
  ...: not taken for damage).
  """
  @spec open(Path.t(), keyword()) :: {:ok, Store.t()} | {:error, ElixirScope.Error.file_reason()}
  def open(path, opts \\ []) do
    path = ElixirScope.Args.path!(path, "path")
    opts = ElixirScope.Options.validate!(opts, progress: nil, since: nil, until: nil)
    progress = ElixirScope.Args.fun!(opts[:progress], :progress, 2) || fn _, _ -> :ok end
    path = Path.expand(path)

    with {:ok, since, until} <- window(path, opts[:since], opts[:until]),
         {:ok, loading, total} <- Native.disk_load_begin(path, since, until),
         :ok <- run_steps(fn -> Native.disk_load_step(loading) end, total, progress),
         {:ok, ref, report} <- Native.disk_load_finish(loading) do
      # The last call says it is done, whether the trace was read whole or only its footers.
      progress.(total, total)

      offset =
        case report.clock do
          {mono, sys} -> sys - mono
          nil -> 0
        end

      {:ok, %Store{ref: ref, time_offset: offset, source: Map.put(report, :path, path)}}
    end
  end

  # The window in the capture's monotonic nanoseconds: DateTimes go through the trace's clock
  # (the first record of its first segment).
  defp window(path, since, until) do
    if Enum.any?([since, until], &match?(%DateTime{}, &1)) do
      case Native.disk_clock(path) do
        {:ok, {mono, sys}} ->
          to_mono = fn
            %DateTime{} = dt -> DateTime.to_unix(dt, :nanosecond) - sys + mono
            other -> other
          end

          window_ints(to_mono.(since), to_mono.(until))

        {:ok, nil} ->
          {:error, :no_clock}

        error ->
          error
      end
    else
      window_ints(since, until)
    end
  end

  @min_i64 -9_223_372_036_854_775_808

  defp window_ints(since, until) do
    cond do
      not Enum.all?([since, until], &(is_nil(&1) or is_integer(&1))) ->
        raise ArgumentError,
              "invalid :since/:until #{inspect({since, until})}, expected monotonic nanoseconds or DateTimes"

      is_integer(since) and is_integer(until) and since > until ->
        raise ArgumentError,
              "invalid window: :until (#{until}) is before :since (#{since}); give since <= until"

      true ->
        # Beyond the capture's clock either way: no bound.
        clamp = fn t -> t && t |> max(@min_i64) |> min(@max_i64) end
        {:ok, clamp.(since), clamp.(until)}
    end
  end

  # Runs a stepwise NIF (loading, summarizing) to its end, reporting progress after each step.
  defp run_steps(step, total, progress, last \\ nil) do
    case step.() do
      {:more, read} ->
        # Nothing went forward (an event still being written): wait a moment, not spin.
        if read == last, do: Process.sleep(1), else: progress.(read, total)
        run_steps(step, total, progress, read)

      :done ->
        :ok

      {:error, _} = e ->
        e
    end
  end

  @doc """
  The nodes whose pids, ports and references in opened traces carry a stand-in node here, by
  stand-in atom: nodes this VM has no atom for, and the nodes of traces captured by another run
  of a VM (whose `<0.85.0>` is not this VM's). One table for the whole VM: a node has the same
  stand-in in every trace.

      iex> is_map(ElixirScope.Persist.nodes())
      true
  """
  @spec nodes() :: %{atom() => String.t()}
  def nodes, do: Map.new(Native.disk_foreign_nodes())

  @typedoc "What `summary/2` returns."
  @type summary :: %{
          segments: non_neg_integer(),
          bytes: non_neg_integer(),
          events: non_neg_integer(),
          first: {pos_integer(), integer()} | nil,
          last: {pos_integer(), integer()} | nil,
          clock: {integer(), integer()} | nil,
          kinds: %{ElixirScope.Event.kind() => pos_integer()},
          pids: %{(pid() | binary()) => pos_integer()},
          calls: %{mfa() => pos_integer()},
          tags: %{(atom() | binary()) => pos_integer()},
          state_changes: non_neg_integer(),
          dropped: non_neg_integer(),
          truncated: non_neg_integer(),
          torn: [String.t()],
          missing: non_neg_integer(),
          damaged: [String.t()],
          from_footers: non_neg_integer()
        }

  @doc """
  What a trace holds, without loading it: events by kind, process, called function and
  message tag, the seq and time (`{seq, ts}`) of its first and last events, state changes, drop
  counters. Sealed segments answer from their index footer; a segment without one (the last
  of a capture that is still running or was cut short) is read through.

  ## Options

    * `:progress` - a function called with `(bytes_read, bytes_total)` after each segment.
    * `:footers` - `false` to read every segment through (default `true`).
  """
  @spec summary(Path.t(), keyword()) ::
          {:ok, summary()} | {:error, ElixirScope.Error.file_reason()}
  def summary(path, opts \\ []) do
    path = ElixirScope.Args.path!(path, "path")
    opts = ElixirScope.Options.validate!(opts, progress: nil, footers: true)
    progress = ElixirScope.Args.fun!(opts[:progress], :progress, 2) || fn _, _ -> :ok end
    ElixirScope.Args.boolean!(opts[:footers], :footers)

    with {:ok, s, total} <- Native.disk_summary_begin(Path.expand(path), opts[:footers] == true),
         :ok <- run_steps(fn -> Native.disk_summary_step(s) end, total, progress),
         {:ok, map} <- Native.disk_summary_finish(s) do
      {:ok,
       %{
         map
         | kinds: Map.new(map.kinds),
           pids: counts(map.pids),
           calls: counts(map.calls),
           tags: counts(map.tags)
       }}
    end
  end

  # Keys that decode alike (processes without a recorded encoding are all nil) add up.
  defp counts(pairs),
    do: Enum.reduce(pairs, %{}, fn {k, n}, acc -> Map.update(acc, k, n, &(&1 + n)) end)

  @doc """
  What opening a trace found (`nil` for a store that was not opened from disk): events,
  segments, bytes on disk, the first seq (above 1 when retention deleted older segments),
  segments with a torn tail, missing events, the capture's drop and truncation counters,
  processes and atoms foreign to this VM, the capture's clock, and the segments whose events
  are read from disk as queries need them (`:paged`).

  An opened store's seqs are the trace's: an event has the same seq in the capture that wrote
  it, in the opened trace and in `summary/2`, also when retention deleted the first segments,
  events were lost midway (`:gaps`) or a window was opened (its states from before it keep
  theirs). Only a gap of over 16 million seqs is numbered on (`:renumbered` says so).

  Damage costs only what is damaged: a segment that cannot be read (gone, empty, not a
  segment, an archive that does not decompress) or that does not hold the events its place
  says (a copy of another segment) is skipped whole and named in `:damaged`; a damaged frame
  ends its segment (`:torn`); a damaged or lost `MANIFEST` is rebuilt from the segment files
  (`:manifest_rebuilt`). A trace none of whose segments can be read is an error.

  A trace opened paged reads its events from disk as queries need them: `:events` is what its
  footers count, and `:unread` the seqs of the blocks read since that gave no event (damaged
  frames, files gone, or seqs the capture never wrote; their files join `:damaged`), so
  `info/1` asked again after queries may say more.
  """
  @spec info(Store.t()) :: report() | nil
  def info(%Store{source: nil}), do: nil

  def info(%Store{source: source} = store) do
    case Native.disk_damage(Store.ref(store)) do
      {unread, files} ->
        %{source | damaged: Enum.uniq(source.damaged ++ files)} |> Map.put(:unread, unread)

      nil ->
        Map.put(source, :unread, 0)
    end
  end

  def info(other), do: ElixirScope.Args.bad_store!(other, "store")
end
