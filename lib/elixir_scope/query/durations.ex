defmodule ElixirScope.Query.Durations do
  @moduledoc """
  Statistics of call durations (`ElixirScope.Query.durations/2`), in nanoseconds: how many
  calls completed, the shortest, the longest and the average. Shown with units:

      iex> %ElixirScope.Query.Durations{count: 2, min: 1_000, max: 3_000, avg: 2_000.0}
      #Durations<2 calls: min 1.0 µs, avg 2.0 µs, max 3.0 µs>
  """

  @enforce_keys [:count, :min, :max, :avg]
  defstruct [:count, :min, :max, :avg]

  # Read like the map it used to be: `stats[:avg]` works as `stats.avg` does.
  @behaviour Access

  @impl Access
  def fetch(%__MODULE__{} = d, key), do: Map.fetch(Map.from_struct(d), key)

  @impl Access
  def get_and_update(%__MODULE__{} = d, key, fun) do
    {get, map} = Map.get_and_update(Map.from_struct(d), key, fun)
    {get, struct!(__MODULE__, map)}
  end

  @impl Access
  def pop(%__MODULE__{} = d, key), do: {Map.get(Map.from_struct(d), key), d}

  @type t :: %__MODULE__{
          count: pos_integer(),
          min: non_neg_integer(),
          max: non_neg_integer(),
          avg: float()
        }

  defimpl Inspect do
    def inspect(d, _opts), do: "#Durations<#{ElixirScope.Format.durations(d)}>"
  end
end
