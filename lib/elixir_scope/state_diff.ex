defmodule ElixirScope.StateDiff do
  @moduledoc """
  A structural diff of two terms, as used to compare a process's states: which paths changed,
  which were added and which removed.

  Maps and structs are compared key by key, tuples and lists element by element (a list that
  grew or shrank reports the extra elements as added or removed); anything else is compared with
  `===`. A path is the list of keys and indexes from the root.

  The walk goes 64 levels deep at most: below that, two different subterms are reported whole,
  as one change at their path (which then has 64 elements). So a diff costs time and memory in
  proportion to the terms' size, whatever their depth (every changed level of a deep term would
  otherwise carry a path as long as its depth).

      iex> ElixirScope.StateDiff.diff(%{count: 1, name: "a"}, %{count: 2, tags: []})
      %ElixirScope.StateDiff{
        changed: [{[:count], 1, 2}],
        added: [{[:tags], []}],
        removed: [{[:name], "a"}],
        equal: false
      }

      iex> ElixirScope.StateDiff.diff({:ok, [1, 2]}, {:ok, [1, 3, 4]})
      %ElixirScope.StateDiff{changed: [{[1, 1], 2, 3}], added: [{[1, 2], 4}], removed: [], equal: false}
  """

  defstruct changed: [], added: [], removed: [], equal: true, before: nil, after: nil

  @max_depth 64

  @typedoc "A path from the root: map keys, tuple and list indexes."
  @type path :: [term()]

  @typedoc """
  A diff. `equal` says whether the terms are the same (no change at all); `before` and `after`
  are the terms compared when `ElixirScope.Query.compare_states/2` made it (`nil` from
  `diff/2`, which does not keep them).
  """
  @type t :: %__MODULE__{
          changed: [{path(), old :: term(), new :: term()}],
          added: [{path(), term()}],
          removed: [{path(), term()}],
          equal: boolean(),
          before: term(),
          after: term()
        }

  @doc """
  The differences between `old` and `new`. Equal terms give an empty diff.

  ## Examples

      iex> ElixirScope.StateDiff.diff(:same, :same)
      %ElixirScope.StateDiff{}
  """
  @spec diff(term(), term()) :: t()
  def diff(old, new) do
    {changed, added, removed} = walk(old, new, [], 0, {[], [], []})

    %__MODULE__{
      changed: Enum.reverse(changed),
      added: Enum.reverse(added),
      removed: Enum.reverse(removed),
      equal: changed == [] and added == [] and removed == []
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

  defp walk(a, b, _path, _depth, acc) when a === b, do: acc
  defp walk(a, b, path, @max_depth, acc), do: changed(path, a, b, acc)

  defp walk(%_{} = a, %_{} = b, path, d, acc) when a.__struct__ == b.__struct__,
    do: walk_maps(Map.from_struct(a), Map.from_struct(b), path, d + 1, acc)

  defp walk(a, b, path, d, acc)
       when is_map(a) and is_map(b) and not is_struct(a) and not is_struct(b),
       do: walk_maps(a, b, path, d + 1, acc)

  defp walk(a, b, path, d, acc)
       when is_tuple(a) and is_tuple(b) and tuple_size(a) == tuple_size(b),
       do: walk_lists(Tuple.to_list(a), Tuple.to_list(b), path, d + 1, 0, acc)

  defp walk(a, b, path, d, acc) when is_list(a) and is_list(b) do
    if not List.improper?(a) and not List.improper?(b),
      do: walk_lists(a, b, path, d + 1, 0, acc),
      else: changed(path, a, b, acc)
  end

  defp walk(a, b, path, _d, acc), do: changed(path, a, b, acc)

  defp changed(path, a, b, {c, ad, r}), do: {[{Enum.reverse(path), a, b} | c], ad, r}

  # `d`: the depth of the values (elements) below, the length of their paths.
  defp walk_maps(a, b, path, d, acc) do
    keys = Enum.sort(Enum.uniq(Map.keys(a) ++ Map.keys(b)))

    Enum.reduce(keys, acc, fn k, {c, ad, r} = acc ->
      case {Map.fetch(a, k), Map.fetch(b, k)} do
        {{:ok, va}, {:ok, vb}} -> walk(va, vb, [k | path], d, acc)
        {:error, {:ok, vb}} -> {c, [{Enum.reverse([k | path]), vb} | ad], r}
        {{:ok, va}, :error} -> {c, ad, [{Enum.reverse([k | path]), va} | r]}
      end
    end)
  end

  defp walk_lists([a | as], [b | bs], path, d, i, acc),
    do: walk_lists(as, bs, path, d, i + 1, walk(a, b, [i | path], d, acc))

  defp walk_lists([], rest, path, _d, i, {c, ad, r}) do
    added = rest |> Enum.with_index(i) |> Enum.map(fn {v, j} -> {Enum.reverse([j | path]), v} end)
    {c, Enum.reverse(added) ++ ad, r}
  end

  defp walk_lists(rest, [], path, _d, i, {c, ad, r}) do
    removed =
      rest |> Enum.with_index(i) |> Enum.map(fn {v, j} -> {Enum.reverse([j | path]), v} end)

    {c, ad, Enum.reverse(removed) ++ r}
  end
end
