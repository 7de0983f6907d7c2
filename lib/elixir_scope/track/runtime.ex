defmodule ElixirScope.Track.Runtime do
  @moduledoc false
  # What tracked functions call. `enter/2` is the one check a tracked call pays when no capture
  # runs (a persistent_term read); it answers nil then, and every record is skipped inline.

  alias ElixirScope.Native

  @key {ElixirScope.Track, :store}

  @doc false
  def enable(store_ref), do: :persistent_term.put(@key, store_ref)

  @doc false
  def disable do
    if :persistent_term.get(@key, nil) != nil, do: :persistent_term.erase(@key)
    :ok
  end

  @doc false
  def enter(mfa, line) do
    case :persistent_term.get(@key, nil) do
      nil ->
        nil

      ref ->
        case Native.track_record(ref, 0, mfa, {:"$call", line, nil}) do
          nil -> nil
          seq -> {ref, seq, mfa}
        end
    end
  end

  @doc false
  def record({ref, call, mfa}, name, line, value) do
    Native.track_record(ref, call, mfa, {name, line, value})
    :ok
  end
end
