defmodule ElixirScope.Query.At do
  @moduledoc false
  # Converts the time arguments of history queries into the native form: {:seq, n} or {:ts, ns}.

  # Beyond the NIFs' 64 bits, times and seqs are clamped (see ElixirScope.Args): a time before or
  # after anything the capture's clock shows, a seq after every event, mean the same at the end.

  alias ElixirScope.{Args, Event, Store}

  @doc false
  def native!(_store, %Event{seq: seq}) when is_integer(seq) and seq >= 0,
    do: {:seq, Args.u64(seq)}

  def native!(_store, {:seq, n}) when is_integer(n) and n >= 0, do: {:seq, Args.u64(n)}
  def native!(_store, ts) when is_integer(ts), do: {:ts, Args.i64(ts)}
  def native!(store, %DateTime{} = dt), do: {:ts, Args.i64(Store.from_datetime(store, dt))}
  def native!(store, :now), do: {:seq, Store.stats(store).last_seq}

  def native!(_store, other) do
    raise ArgumentError,
          "invalid time #{inspect(other)}: expected monotonic nanoseconds (an integer), " <>
            "a DateTime, {:seq, n}, an ElixirScope.Event or :now"
  end

  @doc false
  # The `Query.events/1` filters of events from `t` on (`:from`) or up to `t` (`:to`),
  # inclusive.
  def bound(store, :from, t), do: filter(:from, native!(store, t))
  def bound(store, :to, t), do: filter(:to, native!(store, t))

  defp filter(:from, {:seq, n}), do: [after_seq: max(n - 1, 0)]
  defp filter(:from, {:ts, t}), do: [since: t]
  defp filter(:to, {:seq, n}), do: [before_seq: n + 1]
  defp filter(:to, {:ts, t}), do: [until: t]

  @doc false
  def opt_native!(_store, nil), do: nil
  def opt_native!(store, t), do: native!(store, t)
end
