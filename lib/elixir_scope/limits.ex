defmodule ElixirScope.Limits do
  @moduledoc """
  Hard caps on a running capture, so that it can be left on in production: how long it may run
  (`:max_time`) and how fast it may store events (`:max_rate`), and what happens when one is
  reached (`:on_limit`). Given to `ElixirScope.start/1`:

      ElixirScope.start(trace: [:all], max_time: :timer.minutes(10), max_rate: {50_000, 1_000},
                        on_limit: {:level, :minimal})

    * `:max_time` - milliseconds the capture may run.
    * `:max_rate` - `{n, ms}`: at most `n` events stored per window of `ms` milliseconds. It is
      enforced natively, by the tracer itself: the first event over the limit turns the level
      to `:off` at once, before the capture's server hears of it, so a flood stops costing the
      traced processes within one event. (Windows are fixed and aligned on the monotonic clock;
      concurrent schedulers can overshoot by one event each.)
    * `:on_limit` - `:stop` (default): the capture stops, as with `ElixirScope.stop/0`; or
      `{:level, level}`: it goes on at that lighter level (its rate cap armed again). A rate
      cap that trips again at the lighter level stops the capture.

  Each limit reached is recorded in the store as a `:control` event (`%{event: :limit, limit:
  :max_rate, value: {n, ms}, action: ...}`), logged, and listed in `ElixirScope.status/0`
  under `:limits`; once the capture stopped, `status/0`'s `:stopped_by` says which limit.
  """

  alias ElixirScope.{Args, Native, Options, Store}

  @typedoc "What happens when a limit is reached."
  @type action :: :stop | {:level, ElixirScope.tracing_level()}

  @type t :: %__MODULE__{
          max_time: pos_integer() | nil,
          max_rate: {pos_integer(), pos_integer()} | nil,
          on_limit: action(),
          tripped: [{:max_time | :max_rate, action()}]
        }

  defstruct max_time: nil, max_rate: nil, on_limit: :stop, tripped: []

  @doc """
  Validates the limit options of `ElixirScope.start/1` (other keys are ignored).

  ## Examples

      iex> ElixirScope.Limits.options!(max_rate: {100, 1_000}).max_rate
      {100, 1000}
      iex> ElixirScope.Limits.options!(max_rate: 100)
      ** (ArgumentError) invalid :max_rate 100, expected {n, ms}: at most n events per ms milliseconds (positive integers, n at most 8388608, ms at most 86400000)
  """
  @spec options!(keyword()) :: t()
  def options!(opts) do
    %__MODULE__{
      max_time: max_time!(opts[:max_time]),
      max_rate: max_rate!(opts[:max_rate]),
      on_limit: on_limit!(Keyword.get(opts, :on_limit, :stop))
    }
  end

  defp max_time!(nil), do: nil
  defp max_time!(ms) when is_integer(ms) and ms > 0, do: ms
  defp max_time!(other), do: Args.bad!(:max_time, other, "a positive integer of milliseconds")

  @doc false
  def max_rate!(nil), do: nil

  def max_rate!({n, ms} = rate)
      when is_integer(n) and n > 0 and n <= 8_388_608 and is_integer(ms) and ms > 0 and
             ms <= 86_400_000,
      do: rate

  def max_rate!(other) do
    Args.bad!(
      :max_rate,
      other,
      "{n, ms}: at most n events per ms milliseconds (positive integers, n at most 8388608, ms at most 86400000)"
    )
  end

  defp on_limit!(:stop), do: :stop
  defp on_limit!({:level, level}) when level != :off, do: {:level, Options.level!(level)}

  defp on_limit!(other) do
    Args.bad!(:on_limit, other, ":stop or {:level, level} with a level other than :off")
  end

  @doc false
  # Arms the limits on a new capture's store: the rate cap natively, the time as a message
  # `{:elixir_scope_limit, :max_time}` to the calling server.
  @spec arm(t(), Store.t()) :: t()
  def arm(%__MODULE__{} = limits, %Store{} = store) do
    rearm(limits, store)

    if limits.max_time,
      do: Process.send_after(self(), {:elixir_scope_limit, :max_time}, limits.max_time)

    limits
  end

  @doc false
  # Sets (or re-arms) the store's rate cap, as after a fallback to a lighter level.
  @spec rearm(t(), Store.t()) :: :ok
  def rearm(%__MODULE__{max_rate: nil}, _store), do: :ok

  def rearm(%__MODULE__{max_rate: {n, ms}}, %Store{} = store),
    do: Native.store_set_rate_cap(Store.ref(store), n, ms)

  @doc false
  # What to do now that `which` is reached: a second trip of the rate cap stops the capture.
  @spec action(t(), :max_time | :max_rate) :: action()
  def action(%__MODULE__{tripped: tripped, on_limit: on_limit}, which) do
    if Enum.any?(tripped, &match?({^which, {:level, _}}, &1)), do: :stop, else: on_limit
  end

  @doc """
  A limit in words.

  ## Examples

      iex> ElixirScope.Limits.describe(:max_rate, {10, 1000})
      "more than 10 events in 1000 ms (max_rate)"
      iex> ElixirScope.Limits.describe(:max_time, 60_000)
      "60000 ms of capture (max_time)"
  """
  @spec describe(:max_time | :max_rate, term()) :: String.t()
  def describe(:max_rate, {n, ms}), do: "more than #{n} events in #{ms} ms (max_rate)"
  def describe(:max_time, ms), do: "#{ms} ms of capture (max_time)"

  @doc false
  def to_map(%__MODULE__{} = l),
    do: %{max_time: l.max_time, max_rate: l.max_rate, on_limit: l.on_limit, tripped: l.tripped}
end
