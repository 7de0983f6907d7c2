defmodule ElixirScope.Track.Runtime do
  @moduledoc false
  # What tracked functions call. A tracked call first reads `key/0` from persistent_term: with
  # no capture running it is absent and the original body runs; otherwise `enter/4` records the
  # call and each binding is recorded with `record/4`.

  alias ElixirScope.Native

  @key {ElixirScope.Track, :store}

  @doc false
  def key, do: @key

  @doc false
  def enable(store_ref), do: :persistent_term.put(@key, store_ref)

  @doc false
  def disable do
    if :persistent_term.get(@key, nil) != nil, do: :persistent_term.erase(@key)
    :ok
  end

  @doc false
  # Records a call's entry; the context its bindings are recorded with, or nil when the store
  # does not take events now (level, sampling, full).
  def enter(ref, mfa, line, only) do
    case Native.track_record(ref, 0, mfa, {:"$call", line, nil}) do
      nil -> nil
      seq -> {ref, seq, mfa, only}
    end
  end

  @doc false
  # `only`: the clause's `@scope vars:` filter, or nil for every variable.
  def record({ref, call, mfa, only}, name, line, value) do
    if only == nil or name in only, do: Native.track_record(ref, call, mfa, {name, line, value})
    :ok
  end
end
