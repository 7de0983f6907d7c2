defmodule ElixirScope.Supervision do
  @moduledoc """
  Reads a supervisor's children out of its recorded state.

  ElixirScope records a supervisor's state after every callback (`:state` events), like any
  GenServer's; that state holds the children, so the tree at any moment is the children in the
  states in force then. This module understands the state of OTP's `:supervisor` (behind
  Elixir's `Supervisor`) and of `DynamicSupervisor`, by shape: a child is reported with its id
  (`:undefined` under a `DynamicSupervisor`), pid (or `:undefined` / `:restarting`) and type.

      iex> ElixirScope.Supervision.children(:not_a_supervisor_state)
      :error
  """

  @typedoc "A child as `:supervisor.which_children/1` describes it."
  @type child :: %{
          id: term(),
          pid: pid() | :undefined | :restarting,
          type: :worker | :supervisor,
          modules: [module()] | :dynamic
        }

  @doc """
  The children in a supervisor state, in the order `:supervisor.which_children/1` lists them,
  or `:error` when `state` is not a supervisor's state.
  """
  @spec children(term()) :: {:ok, [child()]} | :error
  def children(%DynamicSupervisor{children: children}) do
    list =
      for {pid, {_mfa, _restart, _shutdown, type, modules}} <- children do
        %{id: :undefined, pid: pid, type: type, modules: modules}
      end

    {:ok, Enum.sort_by(list, & &1.pid)}
  end

  def children(state)
      when is_tuple(state) and tuple_size(state) > 3 and elem(state, 0) == :state do
    state
    |> Tuple.to_list()
    |> Enum.find_value(:error, fn
      {ids, db} when is_list(ids) and is_map(db) -> in_order(ids, db)
      _ -> nil
    end)
  end

  def children(_), do: :error

  # OTP's child record: {:child, pid, id, mfargs, restart, [significant,] shutdown, type, modules}.
  defp in_order(ids, db) do
    children =
      for id <- ids, child = Map.get(db, id), is_tuple(child), elem(child, 0) == :child do
        size = tuple_size(child)

        %{
          id: elem(child, 2),
          pid: elem(child, 1),
          type: elem(child, size - 2),
          modules: elem(child, size - 1)
        }
      end

    if length(children) == length(ids), do: {:ok, children}, else: :error
  end
end
