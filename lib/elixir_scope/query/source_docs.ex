defmodule ElixirScope.Query.SourceDocs do
  @moduledoc false
  # The `@doc` strings of a module's public functions, read from its source file at compile
  # time: `ElixirScope.Query` delegates to ElixirScope.Query.History, Vars and Aggregate, and
  # shows their documentation as its own (`h ElixirScope.Query.state_at` shows the real text).
  # A compiled module's docs are not readable while the project compiles; its source is.

  @doc false
  # `%{{name, arity} => doc}` for the functions of the module defined in the file at `path`.
  @spec read(Path.t()) :: %{{atom(), arity()} => String.t()}
  def read(path) do
    {:defmodule, _, [_name, [do: body]]} = path |> File.read!() |> Code.string_to_quoted!()

    body
    |> exprs()
    |> Enum.reduce({nil, %{}}, fn
      {:@, _, [{:doc, _, [doc]}]}, {_, acc} when is_binary(doc) ->
        {doc, acc}

      {:def, _, [head | _]}, {doc, acc} when is_binary(doc) ->
        {nil, Map.put_new(acc, name_arity(head), doc)}

      # A @doc belongs to the next definition of any kind: never carried past one.
      {kind, _, _}, {_, acc}
      when kind in [:def, :defp, :defmacro, :defmacrop, :defdelegate, :defguard] ->
        {nil, acc}

      _, state ->
        state
    end)
    |> elem(1)
  end

  defp exprs({:__block__, _, exprs}), do: exprs
  defp exprs(expr), do: [expr]

  defp name_arity({:when, _, [head | _]}), do: name_arity(head)
  defp name_arity({name, _, args}) when is_list(args), do: {name, length(args)}
  defp name_arity({name, _, _}), do: {name, 0}
end
