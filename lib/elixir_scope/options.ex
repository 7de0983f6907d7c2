defmodule ElixirScope.Options do
  @moduledoc false
  # Validation of user options. Every failure is an ArgumentError naming the option and what is
  # allowed, so a typo in IEx explains itself.

  @levels [:full, :messages_only, :states_only, :minimal, :off]

  def levels, do: @levels

  @doc false
  # A store's settings when not given, as the core defines them.
  def store_defaults do
    {defaults, _ranges} = ElixirScope.Native.store_limits()
    defaults
  rescue
    # No native library (a production build without Rust): the keys, without values.
    ErlangError ->
      Enum.map(
        [
          :max_events,
          :max_bytes,
          :max_payload_bytes,
          :tracing_level,
          :sample_rate,
          :sample_by,
          :overflow
        ],
        &{&1, nil}
      )
  end

  @doc false
  # Validates a store's settings: the keys and types here (for messages naming the option), the
  # ranges in the core (ElixirScope.Native.store_check/6, the check store_new/6 makes), defined
  # there once.
  def store!(opts) do
    {defaults, ranges} = ElixirScope.Native.store_limits()
    opts = validate!(opts, defaults)

    for {key, {min, max}} <- ranges, not (is_integer(opts[key]) and opts[key] in min..max) do
      ElixirScope.Args.bad!(key, opts[key], "an integer from #{min} to #{max}")
    end

    o = %{
      max_events: opts[:max_events],
      max_bytes: opts[:max_bytes],
      max_payload_bytes: opts[:max_payload_bytes],
      tracing_level: level!(opts[:tracing_level]),
      sample_rate: sample_rate!(opts[:sample_rate]) / 1,
      sample_by: sample_by!(opts[:sample_by]),
      overflow: overflow!(opts[:overflow])
    }

    case ElixirScope.Native.store_check(o) do
      :ok ->
        o

      {:error, {:invalid_option, name, allowed}} ->
        key = Enum.find(Map.keys(o), &(Atom.to_string(&1) == name))
        ElixirScope.Args.bad!(key, opts[key], allowed)
    end
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

  @doc false
  def overflow!(o) when o in [:drop_newest, :evict_oldest], do: o

  def overflow!(other) do
    raise ArgumentError,
          "invalid :overflow #{inspect(other)}, expected :drop_newest or :evict_oldest"
  end
end
