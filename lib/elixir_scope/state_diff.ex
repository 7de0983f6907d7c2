defmodule ElixirScope.StateDiff do
  @moduledoc """
  A structural diff of two terms, as used to compare a process's states: which paths changed,
  which were added and which removed.

  Maps and structs are compared key by key, tuples and lists element by element (a list that
  grew or shrank reports the extra elements as added or removed); anything else is compared with
  `===`. A path is the list of keys and indexes from the root.

      iex> ElixirScope.StateDiff.diff(%{count: 1, name: "a"}, %{count: 2, tags: []})
      %ElixirScope.StateDiff{
        changed: [{[:count], 1, 2}],
        added: [{[:tags], []}],
        removed: [{[:name], "a"}]
      }

      iex> ElixirScope.StateDiff.diff({:ok, [1, 2]}, {:ok, [1, 3, 4]})
      %ElixirScope.StateDiff{changed: [{[1, 1], 2, 3}], added: [{[1, 2], 4}], removed: []}
  """

  defstruct changed: [], added: [], removed: []

  @typedoc "A path from the root: map keys, tuple and list indexes."
  @type path :: [term()]

  @type t :: %__MODULE__{
          changed: [{path(), old :: term(), new :: term()}],
          added: [{path(), term()}],
          removed: [{path(), term()}]
        }

  @doc """
  The differences between `old` and `new`. Equal terms give an empty diff.

  ## Examples

      iex> ElixirScope.StateDiff.diff(:same, :same)
      %ElixirScope.StateDiff{}
  """
  @spec diff(term(), term()) :: t()
  def diff(old, new) do
    {changed, added, removed} = walk(old, new, [], {[], [], []})

    %__MODULE__{
      changed: Enum.reverse(changed),
      added: Enum.reverse(added),
      removed: Enum.reverse(removed)
    }
  end

  @doc """
  Whether the diff is empty.

  ## Examples

      iex> ElixirScope.StateDiff.diff(%{a: 1}, %{a: 1}) |> ElixirScope.StateDiff.empty?()
      true
  """
  @spec empty?(t()) :: boolean()
  def empty?(%__MODULE__{changed: [], added: [], removed: []}), do: true
  def empty?(%__MODULE__{}), do: false

  defp walk(a, b, _path, acc) when a === b, do: acc

  defp walk(%_{} = a, %_{} = b, path, acc) when a.__struct__ == b.__struct__,
    do: walk_maps(Map.from_struct(a), Map.from_struct(b), path, acc)

  defp walk(a, b, path, acc)
       when is_map(a) and is_map(b) and not is_struct(a) and not is_struct(b),
       do: walk_maps(a, b, path, acc)

  defp walk(a, b, path, acc) when is_tuple(a) and is_tuple(b) and tuple_size(a) == tuple_size(b),
    do: walk_lists(Tuple.to_list(a), Tuple.to_list(b), path, 0, acc)

  defp walk(a, b, path, acc) when is_list(a) and is_list(b) do
    if not List.improper?(a) and not List.improper?(b),
      do: walk_lists(a, b, path, 0, acc),
      else: changed(path, a, b, acc)
  end

  defp walk(a, b, path, acc), do: changed(path, a, b, acc)

  defp changed(path, a, b, {c, ad, r}), do: {[{Enum.reverse(path), a, b} | c], ad, r}

  defp walk_maps(a, b, path, acc) do
    keys = Enum.sort(Enum.uniq(Map.keys(a) ++ Map.keys(b)))

    Enum.reduce(keys, acc, fn k, {c, ad, r} = acc ->
      case {Map.fetch(a, k), Map.fetch(b, k)} do
        {{:ok, va}, {:ok, vb}} -> walk(va, vb, [k | path], acc)
        {:error, {:ok, vb}} -> {c, [{Enum.reverse([k | path]), vb} | ad], r}
        {{:ok, va}, :error} -> {c, ad, [{Enum.reverse([k | path]), va} | r]}
      end
    end)
  end

  defp walk_lists([a | as], [b | bs], path, i, acc),
    do: walk_lists(as, bs, path, i + 1, walk(a, b, [i | path], acc))

  defp walk_lists([], rest, path, i, {c, ad, r}) do
    added = rest |> Enum.with_index(i) |> Enum.map(fn {v, j} -> {Enum.reverse([j | path]), v} end)
    {c, Enum.reverse(added) ++ ad, r}
  end

  defp walk_lists(rest, [], path, i, {c, ad, r}) do
    removed =
      rest |> Enum.with_index(i) |> Enum.map(fn {v, j} -> {Enum.reverse([j | path]), v} end)

    {c, ad, Enum.reverse(removed) ++ r}
  end
end
