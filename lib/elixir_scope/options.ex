defmodule ElixirScope.Options do
  @moduledoc false
  # Validation of user options. Every failure is an ArgumentError naming the option and what is
  # allowed, so a typo in IEx explains itself.

  @levels [:full, :messages_only, :states_only, :minimal, :off]
  @store_defaults [
    max_events: 1_000_000,
    max_bytes: 256 * 1024 * 1024,
    max_payload_bytes: 4096,
    tracing_level: :full,
    sample_rate: 1.0,
    sample_by: :process
  ]

  def levels, do: @levels
  def store_defaults, do: @store_defaults

  @doc false
  def store!(opts) do
    opts = validate!(opts, @store_defaults)

    %{
      max_events: pos_integer!(opts, :max_events, 1_000_000_000),
      max_bytes: pos_integer!(opts, :max_bytes, 1_099_511_627_776),
      max_payload_bytes: range!(opts, :max_payload_bytes, 64, 1_048_576),
      tracing_level: level!(opts[:tracing_level]),
      sample_rate: sample_rate!(opts[:sample_rate]),
      sample_by: sample_by!(opts[:sample_by])
    }
  end

  @doc false
  def validate!(opts, allowed) do
    opts = ElixirScope.Args.opts!(opts)

    keys =
      Enum.map(allowed, fn
        {k, _} -> k
        k -> k
      end)

    case Enum.find(Keyword.keys(opts), &(&1 not in keys)) do
      nil -> Keyword.validate!(opts, allowed)
      unknown -> unknown!(unknown, keys)
    end
  end

  @doc false
  # Raises the ArgumentError of an unknown option: the nearest allowed one, if one is near
  # enough, and every allowed one.
  @spec unknown!(term(), [atom()]) :: no_return()
  def unknown!(unknown, keys) do
    raise ArgumentError,
          "unknown option #{inspect(unknown)}#{suggestion(unknown, keys)} " <>
            "(allowed options: #{Enum.map_join(keys, ", ", &inspect/1)})"
  end

  # ", did you mean :x?" for the allowed key nearest to `unknown`, when one is near enough.
  defp suggestion(unknown, keys) when is_atom(unknown) do
    name = Atom.to_string(unknown)

    keys
    |> Enum.map(&{String.jaro_distance(name, Atom.to_string(&1)), &1})
    |> Enum.max(fn -> {0.0, nil} end)
    |> case do
      {d, key} when d >= 0.8 -> ", did you mean #{inspect(key)}?"
      _ -> ""
    end
  end

  defp suggestion(_unknown, _keys), do: ""

  @doc false
  def level!(level) when level in @levels, do: level

  def level!(other) do
    raise ArgumentError,
          "invalid :tracing_level #{inspect(other)}, expected one of: " <>
            Enum.map_join(@levels, ", ", &inspect/1)
  end

  @doc false
  def sample_rate!(r) when is_number(r) and r >= 0 and r <= 1, do: r

  def sample_rate!(other) do
    raise ArgumentError,
          "invalid :sample_rate #{inspect(other)}, expected a number from 0.0 to 1.0"
  end

  @doc false
  def sample_by!(by) when by in [:process, :event], do: by

  def sample_by!(other) do
    raise ArgumentError, "invalid :sample_by #{inspect(other)}, expected :process or :event"
  end

  defp pos_integer!(opts, key, max) do
    case opts[key] do
      n when is_integer(n) and n > 0 and n <= max ->
        n

      other ->
        raise ArgumentError,
              "invalid #{inspect(key)} #{inspect(other)}, expected a positive integer up to #{max}"
    end
  end

  defp range!(opts, key, min, max) do
    case opts[key] do
      n when is_integer(n) and n >= min and n <= max ->
        n

      other ->
        raise ArgumentError,
              "invalid #{inspect(key)} #{inspect(other)}, expected an integer from #{min} to #{max}"
    end
  end
end
