defmodule ElixirScope.Store do
  @moduledoc """
  A capture store: the native, bounded, lock-free event log that tracer callbacks write into
  and queries read from.

  `ElixirScope.start/1` creates one and makes it the default store; every query takes a
  `store:` option to read another one. A store is an opaque handle: copying it between processes
  is cheap, and it stays readable after capture stops until nothing refers to it any more.

      iex> store = ElixirScope.Store.new!(max_events: 1_000)
      iex> ElixirScope.Store.stats(store).capacity
      1000

  ## Safety

  The store's memory is bounded by `max_events` (64 bytes per event) plus `max_bytes` (payloads),
  each rounded up to whole chunks (256 KiB for small stores, else 2 MiB), plus at most one more
  chunk of each that a background thread commits ahead of the writers. Memory is committed as
  events arrive. When the store is full, new events are dropped and counted (or the oldest
  evicted: see "Ring mode" below); a traced process never waits for the store. A garbage-collected store leaves up to 64 MiB for the next capture
  to reuse (`release_memory/0` gives it back). Each scheduler also keeps small encoding caches,
  two buffers (the size of the largest recent payload, at most 512 KiB each kept) and the last
  states it stored (4, of up to 256 KiB each), to tell how the next one changed.
  """

  alias ElixirScope.{Args, Native, Options}

  @enforce_keys [:ref, :time_offset]
  defstruct [:ref, :time_offset, source: nil, trace_dir: nil]

  # `source`: what opening the trace found, for a store opened from disk. `trace_dir`: for a
  # persisted capture's store, its trace directory (`store: :trace` reads it, see
  # Persist.trace_store/1).
  @opaque t :: %__MODULE__{
            ref: reference(),
            time_offset: integer(),
            source: map() | nil,
            trace_dir: String.t() | nil
          }

  @typedoc "Counters and settings of a store, see `stats/1`."
  @type stats :: %{
          events: non_neg_integer(),
          dropped: non_neg_integer(),
          truncated: non_neg_integer(),
          bytes: non_neg_integer(),
          payload_bytes: non_neg_integer(),
          capacity: pos_integer(),
          max_bytes: pos_integer(),
          max_payload_bytes: pos_integer(),
          tracing_level: ElixirScope.tracing_level(),
          sample_rate: float(),
          sample_by: :process | :event,
          last_seq: non_neg_integer(),
          published_seq: non_neg_integer(),
          persisted: non_neg_integer(),
          overflow: :drop_newest | :evict_oldest,
          evicted: non_neg_integer()
        }

  @default_key {__MODULE__, :default}

  @doc """
  Creates a store.

  ## Options

    * `:max_events` - events kept at most (default `1_000_000`).
    * `:max_bytes` - payload bytes kept at most (default `268_435_456`, 256 MiB).
    * `:max_payload_bytes` - a payload over this size keeps only its size, hash and a prefix
      (default `4096`, from 64 to 1 MiB). A state is kept whole up to 256 KiB (or the largest
      payload `max_bytes` allows) whatever this is, and stored as a change to the process's
      previous state when it changes little.
    * `:tracing_level` - `:full` (default), `:messages_only`, `:states_only`, `:minimal`, `:off`.
    * `:sample_rate` - fraction kept, `0.0..1.0` (default `1.0`).
    * `:sample_by` - `:process` (default) or `:event`, see `ElixirScope.start/1`.
    * `:overflow` - what the store does when full: `:drop_newest` (default) drops new events
      and counts them in `:dropped`; `:evict_oldest` makes it a ring that keeps the newest
      events. See "Ring mode" below.

  Invalid options raise `ArgumentError`.

  ## Ring mode

  With `overflow: :evict_oldest` the budget is split in eight generations of an eighth of
  `max_events` and `max_bytes` each. Events go to the newest; when it is full (its events or
  its bytes), the oldest generation is evicted whole and a fresh one takes its place, so the
  store holds between seven and eight eighths of its budget, the newest events. `stats/1`
  says how far it evicted (`:evicted`, the last seq gone; seqs go on counting).

  Nothing is overwritten in place: a query that holds an event when its generation is evicted
  keeps reading it whole, and the memory is freed once no query uses it (so memory can pass
  the budget by what running queries hold). A query asked about what is gone says so:
  `ElixirScope.Query.state_at/3` answers `{:error, :evicted}` when the process's state before
  the events kept may have been evicted, and a seq at or below `:evicted` is not found. A
  process whose first events were evicted counts as alive from the events kept on
  (`active_at`, `snapshot_at`); the calls it entered before them are not in its
  `call_stack_at`.

  In a capture (`ElixirScope.start(overflow: :evict_oldest)`), the last state of each live
  process is stored again (unchanged, at that time) before its generation is evicted: four
  times a second, or as often as generations fill (down to every 5 ms), at most a quarter of
  a generation at a time: the state of a quiet process
  outlives the events around it. The processes are tracked in a table of 16,384 entries by
  pid hash: of processes whose pids collide, only the last to change state is carried (the
  others' states are evicted, and said to be).

  A ring-mode store keeps every state whole: states are not stored as changes to the one
  before, which may be evicted. It cannot be persisted (`persist:` keeps everything on disk
  anyway); `ElixirScope.save/2` writes what it holds.

  ## Examples

      iex> store = ElixirScope.Store.new!(tracing_level: :minimal)
      iex> ElixirScope.Store.stats(store).tracing_level
      :minimal
  """
  @spec new!(keyword()) :: t()
  def new!(opts \\ []) do
    # (Options.store!/1 checked the settings as store_new/1 does, and raised for bad ones.)
    case Native.store_new(Options.store!(opts)) do
      {:ok, ref} -> %__MODULE__{ref: ref, time_offset: :erlang.time_offset(:nanosecond)}
      {:error, {:invalid_option, name, why}} -> raise ArgumentError, "invalid #{name}: #{why}"
    end
  end

  @doc """
  The store's counters and settings.

  ## Examples

      iex> ElixirScope.Store.new!() |> ElixirScope.Store.stats() |> Map.take([:events, :dropped])
      %{events: 0, dropped: 0}
  """
  @spec stats(t()) :: stats()
  def stats(%__MODULE__{ref: ref}), do: Native.store_stats(ref)
  def stats(other), do: bad_store!(other)

  @doc """
  Stops the store from accepting events. Every process still tracing into it loses its tracer
  at its next event; stored events stay readable.
  """
  @spec close(t()) :: :ok
  def close(%__MODULE__{ref: ref}), do: Native.store_close(ref)
  def close(other), do: bad_store!(other)

  @doc """
  Changes the tracing level of a store while capture runs.

  A trace read from disk (`ElixirScope.open/2`) captures nothing: setting its level raises
  `ArgumentError`.
  """
  @spec set_level(t(), ElixirScope.tracing_level()) :: :ok
  def set_level(%__MODULE__{ref: ref} = store, level) do
    level = Options.level!(level)
    capture!(store, fn -> Native.store_set_level(ref, level) end)
  end

  def set_level(other, _level), do: bad_store!(other)

  @doc """
  Changes sampling of a store while capture runs.

  A trace read from disk captures nothing: setting its sampling raises `ArgumentError`.
  """
  @spec set_sampling(t(), float(), :process | :event) :: :ok
  def set_sampling(store, rate, by \\ :process)

  def set_sampling(%__MODULE__{ref: ref} = store, rate, by) do
    {rate, by} = {Options.sample_rate!(rate) / 1, Options.sample_by!(by)}
    capture!(store, fn -> Native.store_set_sampling(ref, rate, by) end)
  end

  def set_sampling(other, _rate, _by), do: bad_store!(other)

  @doc """
  Whether `store` is a capture's (it can be traced into), not a trace read from disk.

  ## Examples

      iex> ElixirScope.Store.captures?(ElixirScope.Store.new!())
      true
  """
  @spec captures?(t()) :: boolean()
  def captures?(%__MODULE__{ref: ref}), do: Native.store_captures(ref)
  def captures?(other), do: bad_store!(other)

  # Runs a NIF that changes a capture's settings, for a capture's store; a store read from disk
  # (opened, or following a capture's trace) has none to change.
  defp capture!(%__MODULE__{} = store, nif) do
    if captures?(store) do
      nif.()
    else
      raise ArgumentError,
            "#{inspect(store)} is a trace read from disk: it captures nothing, so it has " <>
              "no level or sampling to change (only a capture's store, from " <>
              "ElixirScope.start/1 or Store.new!/1, has)"
    end
  end

  @doc """
  Returns to the operating system the memory that dropped stores left for reuse.

  When a store is garbage collected, up to 64 MiB of its memory is kept so that the next capture
  starts on memory that is already committed (fresh memory is the largest single cost of capture
  on some machines). Call this to give it back now; returns the number of bytes released.
  """
  @spec release_memory() :: non_neg_integer()
  def release_memory, do: Native.store_release_pool()

  @doc """
  The default store: the one `ElixirScope.start/1` created most recently, or `nil`.
  It stays the default after `ElixirScope.stop/0`, so a finished capture can still be queried.
  """
  @spec default() :: t() | nil
  def default, do: :persistent_term.get(@default_key, nil)

  @doc false
  # Records what ElixirScope changed in its own capture (a limit, a trigger, a watch), as a
  # `:control` event of the calling process, whatever the level.
  @spec record_control(t(), map()) :: :ok
  def record_control(%__MODULE__{} = store, %{} = data),
    do: Native.store_record(ref(store), :control, self(), nil, data)

  @doc false
  @spec put_default(t()) :: :ok
  def put_default(%__MODULE__{} = store), do: :persistent_term.put(@default_key, store)

  @doc false
  @spec tracer_spec(t()) :: {:tracer, module(), reference()}
  def tracer_spec(%__MODULE__{ref: ref}), do: {:tracer, Native, ref}

  @doc false
  # Whether `term` (a tracer's state, from :erlang.trace_info/2) is this store's handle. A
  # comparison: no NIF call, unlike ref/1.
  @spec handle?(t(), term()) :: boolean()
  def handle?(%__MODULE__{ref: ref}, term), do: ref == term

  @doc false
  # The handle to pass to a NIF: always a term on the caller's heap. A store read from
  # persistent_term (the default store) holds a literal, and a dirty NIF whose only reference to
  # a literal is its argument does not keep it alive when that key is replaced: the store could be
  # freed under the NIF. A heap handle keeps it alive for the whole call.
  @spec ref(t()) :: reference()
  def ref(%__MODULE__{ref: ref}), do: Native.store_handle(ref)

  @doc """
  Converts a monotonic timestamp of this store (an event's `ts`) to a UTC `DateTime`.

  Raises `ArgumentError` for a timestamp that is not an integer, or whose time a `DateTime`
  cannot hold (before year 0 or after 9999).
  """
  @spec to_datetime(t(), integer()) :: DateTime.t()
  def to_datetime(%__MODULE__{time_offset: off}, ts), do: datetime!(ts, off)
  def to_datetime(other, _ts), do: bad_store!(other)

  @doc false
  # The UTC DateTime of monotonic nanoseconds `ts` on a clock `offset` from the system's.
  @spec datetime!(integer(), integer()) :: DateTime.t()
  def datetime!(ts, offset) when is_integer(ts) do
    case DateTime.from_unix(ts + offset, :nanosecond) do
      {:ok, dt} -> dt
      {:error, _} -> Args.bad!("ts", ts, "monotonic nanoseconds of a time from year 0 to 9999")
    end
  end

  def datetime!(ts, _offset), do: Args.bad!("ts", ts, "monotonic nanoseconds (an integer)")

  @doc """
  Converts a UTC `DateTime` to the store's monotonic nanoseconds (for `since:`/`until:`).
  """
  @spec from_datetime(t(), DateTime.t()) :: integer()
  def from_datetime(%__MODULE__{time_offset: off}, %DateTime{} = dt) do
    DateTime.to_unix(dt, :nanosecond) - off
  end

  def from_datetime(%__MODULE__{}, other), do: Args.bad!("datetime", other, "a DateTime")
  def from_datetime(other, _dt), do: bad_store!(other)

  defp bad_store!(other), do: Args.bad_store!(other, "store")

  defimpl Inspect do
    def inspect(store, _opts) do
      s = ElixirScope.Store.stats(store)

      case store.source do
        nil -> "#ElixirScope.Store<#{s.events}/#{s.capacity} events, #{s.dropped} dropped>"
        src -> "#ElixirScope.Store<#{src.path}: #{s.events} events, #{s.dropped} dropped>"
      end
    end
  end
end
