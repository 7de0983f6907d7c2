defmodule ElixirScope.Query.At do
  @moduledoc false
  # Converts the time arguments of history queries into the native form: {:seq, n} or {:ts, ns}.

  alias ElixirScope.{Event, Store}

  @doc false
  def native!(_store, %Event{seq: seq}), do: {:seq, seq}
  def native!(_store, {:seq, n}) when is_integer(n) and n >= 0, do: {:seq, n}
  def native!(_store, ts) when is_integer(ts), do: {:ts, ts}
  def native!(store, %DateTime{} = dt), do: {:ts, Store.from_datetime(store, dt)}
  def native!(store, :now), do: {:seq, Store.stats(store).last_seq}

  def native!(_store, other) do
    raise ArgumentError,
          "invalid time #{inspect(other)}: expected monotonic nanoseconds (an integer), " <>
            "a DateTime, {:seq, n}, an ElixirScope.Event or :now"
  end

  @doc false
  def opt_native!(_store, nil), do: nil
  def opt_native!(store, t), do: native!(store, t)
end
