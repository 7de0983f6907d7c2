defmodule ElixirScope.Query.Names do
  @moduledoc """
  How queries take a process: a pid, or what `ElixirScope.trace/2` takes to name one, resolved
  when the query runs.

    * a registered name (an atom): the process registered under it now; when none is (it
      exited, it is another VM's trace), the last process the trace saw take the name (a
      `:register` event, or a `:traced` event of a process that had it when tracing started).
      A question about a past moment (`state_at/3`, `pending_messages_at/3`, `call_stack_at/3`)
      takes the process the trace saw holding the name then, and `why_crashed/2` the last
      holder that exited: a server restarted under the same name is asked about the right
      incarnation;
    * `{:global, name}`: `:global.whereis_name/1`;
    * `{:via, module, name}`: `module.whereis_name/1`.

  A trace opened from disk was captured in another VM: its names are looked up in the trace
  only. A name that resolves to nothing raises `ArgumentError` naming it.
  """

  alias ElixirScope.{Args, Event, Query, Store}

  @typedoc "A process as queries take it."
  @type process :: pid() | atom() | {:global, term()} | {:via, module(), term()}

  @doc """
  The pid `target` names in `store` (a store, or a function giving one when a name needs it);
  `label` names the argument in errors.

  ## Examples

      iex> ElixirScope.Query.Names.resolve!(self(), nil, "pid") == self()
      true

      iex> ElixirScope.Query.Names.resolve!(:no_such_name_anywhere, ElixirScope.Store.new!(), "pid")
      ** (ArgumentError) invalid pid :no_such_name_anywhere: no process is registered under that name, and the trace saw none take it
  """
  @spec resolve!(process() | term(), Store.t() | (() -> Store.t()) | nil, String.t() | atom()) ::
          pid()
  def resolve!(pid, _store, _label) when is_pid(pid), do: pid

  def resolve!(name, store, label) when is_atom(name) and name not in [nil, true, false] do
    store = if is_function(store, 0), do: store.(), else: store

    live = if live?(store), do: Process.whereis(name)
    live || from_trace(name, store) || unknown!(label, name)
  end

  def resolve!({:global, name} = target, store, label) do
    store = if is_function(store, 0), do: store.(), else: store
    live = if live?(store), do: :global.whereis_name(name)
    if is_pid(live), do: live, else: unknown!(label, target)
  end

  def resolve!({:via, mod, name} = target, store, label) when is_atom(mod) do
    store = if is_function(store, 0), do: store.(), else: store

    live =
      if live?(store) and Code.ensure_loaded?(mod) and function_exported?(mod, :whereis_name, 1) do
        try do
          mod.whereis_name(name)
        catch
          _, _ -> :undefined
        end
      end

    if is_pid(live) and node(live) == node(), do: live, else: unknown!(label, target)
  end

  def resolve!(other, _store, label) do
    Args.bad!(
      label,
      other,
      "a pid, a registered name, {:global, name} or {:via, module, name}"
    )
  end

  @doc false
  # As resolve!/3, for a question about the point `at` (`{:seq, n}` or `{:ts, ns}`): a name is
  # the process the trace saw holding it then, when it saw one take it by then.
  @spec resolve_at!(process() | term(), Store.t(), String.t() | atom(), tuple()) :: pid()
  def resolve_at!(name, %Store{} = store, label, at)
      when is_atom(name) and name not in [nil, true, false] do
    case Enum.find(holders(name, store), &at_or_before?(&1, at)) do
      %Event{pid: pid} -> pid
      nil -> resolve!(name, store, label)
    end
  end

  def resolve_at!(target, store, label, _at), do: resolve!(target, store, label)

  @doc false
  # As resolve!/3, for `why_crashed/2`: of the processes that held a name (now, or as the trace
  # saw), the most recent one `exited?` says exited.
  @spec resolve_exited!(process() | term(), Store.t(), String.t() | atom(), (pid() -> boolean())) ::
          pid()
  def resolve_exited!(name, %Store{} = store, label, exited?)
      when is_atom(name) and name not in [nil, true, false] do
    live = if live?(store), do: List.wrap(Process.whereis(name)), else: []
    candidates = Enum.uniq(live ++ Enum.map(holders(name, store), & &1.pid))
    Enum.find(candidates, exited?) || resolve!(name, store, label)
  end

  def resolve_exited!(target, store, label, _exited?), do: resolve!(target, store, label)

  defp at_or_before?(%Event{seq: seq}, {:seq, n}), do: seq <= n
  defp at_or_before?(%Event{ts: ts}, {:ts, t}), do: ts <= t

  # A store captured in this VM (not opened from a trace on disk).
  defp live?(nil), do: true
  defp live?(%Store{source: source}), do: source == nil

  # The last process the trace saw take `name`.
  defp from_trace(_name, nil), do: nil

  defp from_trace(name, %Store{} = store) do
    case holders(name, store) do
      [%Event{pid: pid} | _] -> pid
      [] -> nil
    end
  end

  # The events in which the trace saw processes take `name`, newest first.
  defp holders(name, store) do
    Query.events(store: store, kind: [:register, :traced], order: :desc)
    |> Enum.filter(fn
      %Event{kind: :register, data: ^name} -> true
      %Event{kind: :traced, data: {_, ^name}} -> true
      _ -> false
    end)
  end

  defp unknown!(label, target) do
    label = if is_atom(label), do: inspect(label), else: label

    raise ArgumentError,
          "invalid #{label} #{inspect(target)}: no process is registered under that name" <>
            if(is_atom(target), do: ", and the trace saw none take it", else: "")
  end
end
