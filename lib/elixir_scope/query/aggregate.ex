defmodule ElixirScope.Query.Aggregate do
  @moduledoc """
  Counts, groups, rates and call durations, computed by the Rust core in one pass over the
  store: no event becomes an Elixir term.

  Every function takes the filters of `ElixirScope.Query.find/1`: those of
  `ElixirScope.Query.events/1` but `:limit` and `:order` (which would not apply, and are
  refused), and optionally one content pattern as a string (`message: "{:increment, n} when n >
  5"`). `durations/2` takes no pattern and no `:kind`: it reads calls and their returns.

      alias ElixirScope.Query.Aggregate
      Aggregate.count(kind: :receive, message: "{:increment, _}")
      Aggregate.top([kind: :receive, since: DateTime.add(DateTime.utc_now(), -60)], :pid, 10)
      Aggregate.rate([kind: :send], {1, :second})
      Aggregate.durations([module: MyApp.Repo], :mfa)

  Group keys: `:pid`, `:peer` (`nil` for none), `:kind`, `:module`, `:mfa` (`{m, f, a}`) and
  `:tag` (a message's tag: the atom itself, or the first element of a tuple when it is an atom;
  `nil` otherwise).
  """

  alias ElixirScope.{Args, Native, Store}
  alias ElixirScope.Query.DSL

  @keys [:pid, :peer, :kind, :module, :mfa, :tag]

  @typedoc "What events are grouped by."
  @type key :: :pid | :peer | :kind | :module | :mfa | :tag

  @typedoc "Durations of completed calls, in nanoseconds."
  @type durations :: ElixirScope.Query.Durations.t()

  @doc """
  How many events match.

  ## Examples

      iex> ElixirScope.Query.Aggregate.count(kind: :receive, store: ElixirScope.Store.new!())
      0
  """
  @spec count(keyword()) :: non_neg_integer()
  def count(filters \\ []) do
    case counts(filters, :all) do
      [{:all, n}] -> n
      [] -> 0
    end
  end

  @doc """
  How many events match, per `key`: a map from each key seen to its count.

  ## Examples

      iex> ElixirScope.Query.Aggregate.group_by([store: ElixirScope.Store.new!()], :color)
      ** (ArgumentError) invalid group key :color, expected one of: :pid, :peer, :kind, :module, :mfa, :tag
  """
  @spec group_by(keyword(), key()) :: %{term() => pos_integer()}
  def group_by(filters, key), do: filters |> counts(key!(key)) |> Map.new()

  @doc """
  How many events each process has: `%{pid => count}`, as `group_by([store: store], :pid)`
  counts them but without its `nil` group (events of no process), read off the index's
  per-process lists instead of a pass over the store, so its cost grows with the number of
  processes, not of events. Takes `:store` only.

  ## Examples

      iex> ElixirScope.Query.Aggregate.per_process(store: ElixirScope.Store.new!())
      %{}
  """
  @spec per_process(keyword()) :: %{pid() => pos_integer()}
  def per_process(opts \\ []) do
    opts = ElixirScope.Options.validate!(opts, store: nil)
    store = ElixirScope.Query.store!(opts[:store])

    store
    |> Store.ref()
    |> Native.query_pid_counts()
    |> Enum.filter(fn {pid, _} -> is_pid(pid) end)
    |> Map.new()
  end

  @doc """
  The `n` keys with the most matching events, most first (ties in key order): `[{key, count}]`.
  `n` is a positive integer.
  """
  @spec top(keyword(), key(), pos_integer()) :: [{term(), pos_integer()}]
  def top(filters, key, n \\ 10) do
    n = Args.pos_integer!(n, "n")

    filters
    |> counts(key!(key))
    |> Enum.sort_by(fn {_, count} -> -count end)
    |> Enum.take(n)
  end

  @doc """
  Matching events per time bucket: `[{bucket_start, count}]`, oldest first, with empty buckets
  between the first and the last included as zeros (up to 100 000 buckets). `bucket` is in
  milliseconds, or `{n, unit}` with a `System.time_unit()` or `:minute`; `bucket_start` is
  monotonic nanoseconds, like events' `ts`. `ElixirScope.Format.rate/2` writes the buckets as
  wall-clock times with their counts and bars.
  """
  @spec rate(keyword(), pos_integer() | {pos_integer(), System.time_unit() | :minute}) :: [
          {integer(), non_neg_integer()}
        ]
  def rate(filters, bucket) do
    ns = bucket_ns!(bucket)
    buckets = counts(filters, {:bucket, ns})

    case buckets do
      [] ->
        []

      [{first, _} | _] ->
        {last, _} = List.last(buckets)

        if div(last - first, ns) > 100_000 do
          buckets
        else
          seen = Map.new(buckets)
          for t <- first..last//ns, do: {t, Map.get(seen, t, 0)}
        end
    end
  end

  @doc """
  Durations of the matching calls (call events paired with their return or exception in the
  same process; the filters select which functions and processes): an
  `ElixirScope.Query.Durations` (`count`, `min`, `max`, `avg`, in nanoseconds, shown with units),
  or `nil` when no call completed. With a `key`, a map from key to those statistics.
  `ElixirScope.Format.durations/1` writes either as text.
  """
  @spec durations(keyword(), :all | key()) :: durations() | nil | %{term() => durations()}
  def durations(filters, key \\ :all) do
    by = if key == :all, do: :all, else: key!(key)
    filters = Args.opts!(filters)
    refuse!(filters, [:limit, :order, :kind | DSL.pattern_keys()], "durations/2 times every call")
    {store, filter} = DSL.native_args(filters, nil)

    stats =
      for {k, count, min, max, sum} <- Native.query_durations(Store.ref(store), filter, by),
          into: %{},
          do:
            {k, %ElixirScope.Query.Durations{count: count, min: min, max: max, avg: sum / count}}

    if key == :all, do: stats[:all], else: stats
  end

  defp counts(filters, by) do
    filters = Args.opts!(filters)
    refuse!(filters, [:limit, :order], "aggregations count every match")
    {rest, compiled} = DSL.compile_filters(filters)
    {key, pattern, guard, vars} = split(compiled)
    {store, filter} = DSL.native_args(rest, key)

    DSL.native!(fn -> Native.query_count(Store.ref(store), filter, by, pattern, guard, vars) end)
  end

  defp refuse!(filters, keys, why) do
    case Enum.filter(keys, &Keyword.has_key?(filters, &1)) do
      [] ->
        :ok

      [one] ->
        raise ArgumentError, "option #{inspect(one)} does not apply: #{why}"

      bad ->
        raise ArgumentError,
              "options #{Enum.map_join(bad, ", ", &inspect/1)} do not apply: #{why}"
    end
  end

  defp split(nil), do: {nil, nil, true, 0}
  defp split({key, ir, guard, names}), do: {key, ir, guard, length(names)}

  defp key!(key) when key in @keys, do: key

  defp key!(key) do
    raise ArgumentError,
          "invalid group key #{inspect(key)}, expected one of: " <>
            Enum.map_join(@keys, ", ", &inspect/1)
  end

  @units %{
    nanosecond: 1,
    microsecond: 1_000,
    millisecond: 1_000_000,
    second: 1_000_000_000,
    minute: 60_000_000_000
  }

  # At most about 292 years: bucket starts stay within monotonic time's 64 bits.
  @max_bucket_ns 9_223_372_036_854_775_807

  defp bucket_ns!(ms) when is_integer(ms) and ms > 0, do: bucket_ns!({ms, :millisecond})

  defp bucket_ns!({n, unit} = bucket)
       when is_integer(n) and n > 0 and is_map_key(@units, unit) do
    ns = n * @units[unit]
    if ns > @max_bucket_ns, do: raise(ArgumentError, "bucket #{inspect(bucket)} is too long")
    ns
  end

  defp bucket_ns!(other) do
    raise ArgumentError,
          "invalid bucket #{inspect(other)}, expected milliseconds or {n, unit} with unit one of: " <>
            Enum.map_join(Map.keys(@units), ", ", &inspect/1)
  end
end
