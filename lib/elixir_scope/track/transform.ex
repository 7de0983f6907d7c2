defmodule ElixirScope.Track.Transform do
  @moduledoc false
  # Rewrites a function clause so that it records every variable binding: the parameters on
  # entry, and after each `=` match, case/receive/try/with/fn/for clause pattern. The recording
  # code reads the variables after they are bound and never changes a value, a guard or the
  # expression in tail position (a body's last expression stays last).

  alias ElixirScope.Track.Runtime

  @ctx {:elixir_scope_ctx, [], __MODULE__}
  @result {:elixir_scope_result, [], __MODULE__}
  @ref {:elixir_scope_store, [], __MODULE__}

  @doc false
  # `call` is the clause head, `expr` its `[do: ..., rescue: ..., ...]`; `mfa` the function.
  def clause(call, expr, {_m, _f, _a} = mfa) do
    {_name, meta, args} = head(call)
    line = meta[:line] || 0
    # Every binding gets a record; the `vars:` filter is applied by Runtime.record/4, from the
    # value `@elixir_scope_vars` has when the clause is defined.
    params = args |> List.wrap() |> Enum.map(&strip_default/1) |> vars()

    enter =
      quote do
        unquote(@ctx) =
          unquote(Runtime).enter(
            unquote(@ref),
            unquote(Macro.escape(mfa)),
            unquote(line),
            @elixir_scope_vars
          )
      end

    records = records(params, line)

    {original, tracked} =
      case expr do
        [do: body] ->
          {body, block(records ++ [body(body)])}

        keyword when is_list(keyword) ->
          # An implicit try: made explicit, after the entry, so its clauses see the context.
          try_args = Enum.map(keyword, fn {k, v} -> {k, try_part(k, v)} end)
          {{:try, [line: line], [keyword]}, block(records ++ [{:try, [line: line], [try_args]}])}
      end

    # Without a running capture the original body runs, untouched: the only cost is one
    # `persistent_term` read (`enter` is not called).
    # (The copy is marked generated, so the compiler does not warn about it a second time.)
    body =
      quote do
        case :persistent_term.get(unquote(Runtime.key()), nil) do
          nil ->
            unquote(generated(original))

          unquote(@ref) ->
            unquote(enter)
            unquote(tracked)
        end
      end

    [do: body]
  end

  # Marks code generated (no second round of warnings), but not inside `quote`, whose result is
  # data the function returns.
  defp generated({:quote, _, _} = q), do: q

  defp generated({name, meta, args}) when is_list(meta) do
    args = if is_list(args), do: Enum.map(args, &generated/1), else: args
    {generated(name), Keyword.put(meta, :generated, true), args}
  end

  defp generated({a, b}), do: {generated(a), generated(b)}
  defp generated(list) when is_list(list), do: Enum.map(list, &generated/1)
  defp generated(other), do: other

  # The head without its guards (`def f(x) when a when b`: the innermost left operand).
  defp head({:when, _, [head, _guard]}), do: head(head)
  defp head(head), do: head

  @doc false
  def strip_default({:\\, _, [arg, _default]}), do: arg
  def strip_default(arg), do: arg

  # Bodies: statements in order, each match followed by its records.

  defp body({:__block__, meta, exprs}), do: {:__block__, meta, statements(exprs)}
  defp body(expr), do: block(statements([expr]))

  defp statements([]), do: []

  defp statements([last]) do
    case last do
      {:=, meta, [pattern, rhs]} ->
        records = records(vars(pattern), meta[:line])

        if records == [] do
          [{:=, meta, [pattern, expr(rhs)]}]
        else
          # Keep the match's value as the block's value.
          [quote(do: unquote(@result) = unquote({:=, meta, [pattern, expr(rhs)]}))] ++
            records ++ [@result]
        end

      other ->
        [expr(other)]
    end
  end

  defp statements([{:=, meta, [pattern, rhs]} | rest]) do
    [{:=, meta, [pattern, expr(rhs)]}] ++
      records(vars(pattern), meta[:line]) ++ statements(rest)
  end

  defp statements([e | rest]), do: [expr(e) | statements(rest)]

  # Expressions that contain clauses or blocks.

  defp expr({:quote, _, _} = q), do: q

  defp expr({:fn, meta, clauses}),
    do: {:fn, meta, Enum.map(clauses, &clause_arrow(&1))}

  defp expr({op, meta, [subject, [do: clauses]]})
       when op in [:case, :receive] and is_list(clauses) do
    {op, meta, [expr(subject), [do: Enum.map(clauses, &clause_arrow(&1))]]}
  end

  defp expr({:receive, meta, [kw]}) when is_list(kw) do
    {:receive, meta, [Enum.map(kw, fn {k, v} -> {k, receive_part(k, v)} end)]}
  end

  defp expr({:cond, meta, [[do: clauses]]}) do
    {:cond, meta, [[do: Enum.map(clauses, fn {:->, m, [c, b]} -> {:->, m, [c, body(b)]} end)]]}
  end

  defp expr({:try, meta, [kw]}) when is_list(kw) do
    {:try, meta, [Enum.map(kw, fn {k, v} -> {k, try_part(k, v)} end)]}
  end

  defp expr({:with, meta, args}) when is_list(args) and args != [] do
    {clauses, [kw]} = Enum.split(args, -1)

    if is_list(kw) and Keyword.has_key?(kw, :do) do
      bound =
        Enum.flat_map(clauses, fn
          {:<-, m, [pattern, _]} -> Enum.map(vars(strip_guard(pattern)), &{&1, m[:line]})
          {:=, m, [pattern, _]} -> Enum.map(vars(pattern), &{&1, m[:line]})
          _ -> []
        end)

      records = Enum.flat_map(bound, fn {v, line} -> records([v], line || meta[:line]) end)

      kw =
        Enum.map(kw, fn
          {:do, b} -> {:do, block(records ++ [body(b)])}
          {:else, cs} when is_list(cs) -> {:else, Enum.map(cs, &clause_arrow(&1))}
          other -> other
        end)

      {:with, meta, clauses ++ [kw]}
    else
      {:with, meta, args}
    end
  end

  defp expr({:for, meta, args}) when is_list(args) and args != [] do
    {gens, [kw]} = Enum.split(args, -1)

    if is_list(kw) and Keyword.has_key?(kw, :do) do
      bound =
        Enum.flat_map(gens, fn
          {:<-, m, [pattern, _]} -> Enum.map(vars(strip_guard(pattern)), &{&1, m[:line]})
          {:<<>>, _, [{:<-, m, [pattern, _]}]} -> Enum.map(vars(pattern), &{&1, m[:line]})
          _ -> []
        end)

      records = Enum.flat_map(bound, fn {v, line} -> records([v], line || meta[:line]) end)

      kw =
        Enum.map(kw, fn
          {:do, [{:->, _, _} | _] = clauses} ->
            # reduce: the clauses take the accumulator.
            {:do,
             Enum.map(clauses, fn {:->, m, [p, b]} ->
               {:->, m, [p, block(records ++ [clause_body(p, b, m)])]}
             end)}

          {:do, b} ->
            {:do, block(records ++ [body(b)])}

          other ->
            other
        end)

      {:for, meta, gens ++ [kw]}
    else
      {:for, meta, args}
    end
  end

  defp expr({:__block__, meta, exprs}) when is_list(exprs),
    do: {:__block__, meta, statements(exprs)}

  # Any other call: macros with do/else blocks (if, unless, ...) get their blocks transformed;
  # arguments are searched for nested clauses (an fn passed to Enum.map, a case in an argument).
  defp expr({name, meta, args}) when is_list(args) do
    args =
      case List.last(args) do
        [{:do, _} | _] = kw when is_atom(name) ->
          kw =
            Enum.map(kw, fn
              {k, v} when k in [:do, :else] -> {k, body(v)}
              other -> other
            end)

          Enum.map(Enum.drop(args, -1), &expr(&1)) ++ [kw]

        _ ->
          Enum.map(args, &expr(&1))
      end

    {expr(name), meta, args}
  end

  defp expr({a, b}), do: {expr(a), expr(b)}
  defp expr(list) when is_list(list), do: Enum.map(list, &expr(&1))
  defp expr(other), do: other

  defp receive_part(:do, clauses) when is_list(clauses),
    do: Enum.map(clauses, &clause_arrow(&1))

  # `after timeout ->`: the timeout is an expression, not a pattern; only the body is rewritten.
  defp receive_part(:after, clauses) when is_list(clauses),
    do: Enum.map(clauses, fn {:->, m, [t, b]} -> {:->, m, [t, body(b)]} end)

  defp receive_part(_, v), do: v

  defp try_part(:do, b), do: body(b)
  defp try_part(:after, b), do: body(b)

  defp try_part(k, clauses) when k in [:rescue, :catch, :else] and is_list(clauses),
    do: Enum.map(clauses, &clause_arrow(&1))

  defp try_part(_, v), do: v

  # `pattern(s) -> body`: the clause's bindings are recorded first in its body.
  defp clause_arrow({:->, meta, [patterns, b]}),
    do: {:->, meta, [patterns, clause_body(patterns, b, meta)]}

  defp clause_arrow(other), do: other

  defp clause_body(patterns, b, meta) do
    bound = patterns |> List.wrap() |> Enum.map(&strip_guard/1) |> Enum.map(&strip_in/1) |> vars()
    block(records(bound, meta[:line]) ++ [body(b)])
  end

  defp strip_guard({:when, _, args}), do: args |> Enum.drop(-1)
  defp strip_guard(p), do: p

  # `e in [RuntimeError]` in rescue: only `e` binds.
  defp strip_in({:in, _, [var, _]}), do: var
  defp strip_in(p), do: p

  # Records: `ctx && Runtime.record(ctx, :name, line, name)` for each variable kept.

  @doc false
  # The names of the variables a rewritten clause records, in order, without duplicates.
  def recorded_names(tracked) do
    {_, names} =
      Macro.prewalk(tracked, [], fn
        {{:., _, [Runtime, :record]}, _, [_, name, _, _]} = node, acc when is_atom(name) ->
          {node, [name | acc]}

        node, acc ->
          {node, acc}
      end)

    names |> Enum.reverse() |> Enum.uniq()
  end

  defp records(vars, line) do
    for {name, _, ctx} <- vars do
      quote do
        unquote(@ctx) &&
          unquote(Runtime).record(
            unquote(@ctx),
            unquote(name),
            unquote(line || 0),
            unquote({name, [], ctx})
          )
      end
    end
  end

  defp block([single]), do: single
  defp block(exprs), do: {:__block__, [], exprs}

  @doc false
  # The variables a pattern binds, in order of appearance, without duplicates: not pinned ones,
  # not those on the right of `::` in binaries (sizes), not `_`-prefixed ones, and only the
  # user's own (nil context).
  def vars(pattern) do
    pattern
    |> collect([])
    |> Enum.reverse()
    |> Enum.uniq_by(fn {name, _, _} -> name end)
  end

  defp collect({:^, _, _}, acc), do: acc
  defp collect({:"::", _, [left, _size]}, acc), do: collect(left, acc)
  defp collect({:@, _, _}, acc), do: acc
  defp collect({:when, _, args}, acc), do: args |> Enum.drop(-1) |> collect(acc)

  defp collect({name, meta, ctx}, acc) when is_atom(name) and is_atom(ctx) do
    cond do
      ctx != nil -> acc
      String.starts_with?(Atom.to_string(name), "_") -> acc
      meta[:generated] -> acc
      true -> [{name, meta, ctx} | acc]
    end
  end

  defp collect({:%, _, [struct, map]}, acc), do: collect(map, collect(struct, acc))

  defp collect({:%{}, _, kvs}, acc),
    do: Enum.reduce(kvs, acc, fn {_k, v}, acc -> collect(v, acc) end)

  defp collect({_, _, args}, acc) when is_list(args), do: Enum.reduce(args, acc, &collect/2)
  defp collect({a, b}, acc), do: collect(b, collect(a, acc))
  defp collect(list, acc) when is_list(list), do: Enum.reduce(list, acc, &collect/2)
  defp collect(_, acc), do: acc
end
