defmodule ElixirScope.Track do
  @moduledoc """
  Line-by-line variable tracking: every binding inside an annotated function, with its value
  and source line, for each call — without changing what the code does.

      defmodule MyApp.Pricing do
        use ElixirScope.Track

        @scope true
        def total(items, discount) do
          subtotal = Enum.sum(for %{price: p, qty: q} <- items, do: p * q)
          total = subtotal * (1 - discount)
          Float.round(total, 2)
        end
      end

      iex> MyApp.Pricing.total([%{price: 10.0, qty: 2}], 0.1)
      iex> ElixirScope.Query.variables({MyApp.Pricing, :total, 2})
      [%{name: :items, value: [...], line: 5}, %{name: :discount, ...}, %{name: :subtotal, value: 20.0, line: 6}, ...]
      iex> IO.puts(ElixirScope.Query.source_view({MyApp.Pricing, :total, 2}))

  ## Annotations

    * `@scope true` before a `def`/`defp` tracks every clause of that function.
    * `@scope vars: [:a, :b]` tracks only those variables.
    * `@scope false` excludes a function from `use ElixirScope.Track, all: true`.
    * `use ElixirScope.Track, all: true` tracks every function of the module.

  What is recorded: the parameters on entry, then each variable right after it is bound — by
  `=` (destructuring included), and by the clauses of `case`, `cond`, `with`, `receive`, `try`
  (`rescue`/`catch`/`else`), anonymous functions and comprehensions. Pinned (`^x`), ignored
  (`_x`) and macro-generated variables are not recorded. Bindings group per call: each call
  records an entry event, and its bindings point to it.

  ## Cost and configuration

  When no capture is running, a tracked call costs one `:persistent_term` read. With
  `config :elixir_scope, track: false` — the default in `:prod` unless set to `true` — the macro
  compiles the original code, untouched.

  ## Safety

  Each clause is defined where it is written, so attribute values, aliases, clause order and
  `super` are the user's. The rewrite only adds reads of variables after they are bound:
  values, exceptions, guards, pins and shadowing are unchanged, and a body's last expression
  stays last (a tail call stays a
  tail call; the one exception is a body that ends in a match, whose value is kept through a
  temporary). Recording goes through a NIF that never blocks (a full store drops the event).
  """

  alias ElixirScope.Track.Transform

  @doc false
  defmacro __using__(opts) do
    all = Keyword.get(opts, :all, false)

    quote do
      import Kernel, except: [def: 1, def: 2, defp: 1, defp: 2]
      import ElixirScope.Track, only: [def: 1, def: 2, defp: 1, defp: 2]
      Module.register_attribute(__MODULE__, :scope, accumulate: false)
      Module.put_attribute(__MODULE__, :elixir_scope_track_all, unquote(all))
      Module.put_attribute(__MODULE__, :elixir_scope_tracked, %{})
      Module.put_attribute(__MODULE__, :elixir_scope_vars, nil)
      Module.register_attribute(__MODULE__, :elixir_scope_funs, accumulate: true)
      @before_compile ElixirScope.Track
    end
  end

  @doc false
  # Defines `__elixir_scope_tracked__/0`: whether the module's tracked functions were rewritten
  # (`config :elixir_scope, track:`), and for each tracked `{name, arity}` the variables it
  # records (`:disabled` when not rewritten). What `ElixirScope.Query.variables/2` and
  # `var_history/3` check an empty answer against.
  defmacro __before_compile__(env) do
    funs =
      env.module
      |> Module.get_attribute(:elixir_scope_funs)
      |> Enum.reverse()
      |> Enum.reduce(%{}, fn {key, names}, acc ->
        Map.update(acc, key, names, fn
          :disabled -> :disabled
          seen -> Enum.uniq(seen ++ List.wrap(names))
        end)
      end)

    quote do
      @doc false
      Kernel.def __elixir_scope_tracked__ do
        %{rewritten: unquote(enabled?()), functions: unquote(Macro.escape(funs))}
      end
    end
  end

  @doc false
  # The variables a rewritten clause records, given its `vars:` filter.
  def __names__(names, opts) do
    case opts[:vars] do
      nil -> names
      only -> Enum.filter(names, &(&1 in only))
    end
  end

  @doc "`Kernel.def/2`, recording the clause's bindings when it is tracked (see the module docs)."
  defmacro def(call, expr \\ nil), do: define(:def, call, expr, __CALLER__)

  @doc "`Kernel.defp/2`, recording the clause's bindings when it is tracked (see the module docs)."
  defmacro defp(call, expr \\ nil), do: define(:defp, call, expr, __CALLER__)

  # A bodiless head (default arguments) passes through; `@scope` stays for the clause after it.
  defp define(kind, call, nil, _caller) do
    quote do: Kernel.unquote(kind)(unquote(call))
  end

  # Each clause is defined where it is written, as written or rewritten: which one is decided
  # when the module body runs that far (`__scope__/3` reads `@scope` then), so attributes,
  # aliases, clause order and `super` all stay the user's.
  defp define(kind, call, expr, caller) do
    {name, arity} = name_arity(call)

    if enabled?() and is_list(expr) do
      tracked = Transform.clause(call, expr, {caller.module, name, arity})
      names = Transform.recorded_names(tracked)

      quote do
        case ElixirScope.Track.__scope__(__MODULE__, unquote(name), unquote(arity)) do
          nil ->
            Kernel.unquote(kind)(unquote(call), unquote(expr))

          scope_opts ->
            Module.put_attribute(
              __MODULE__,
              :elixir_scope_funs,
              {{unquote(name), unquote(arity)},
               ElixirScope.Track.__names__(unquote(names), scope_opts)}
            )

            Kernel.unquote(kind)(unquote(call), unquote(tracked))
        end
      end
    else
      quote do
        if ElixirScope.Track.__scope__(__MODULE__, unquote(name), unquote(arity)),
          do:
            Module.put_attribute(
              __MODULE__,
              :elixir_scope_funs,
              {{unquote(name), unquote(arity)}, :disabled}
            )

        Kernel.unquote(kind)(unquote(call), unquote(expr))
      end
    end
  end

  @doc false
  # Whether the clause being defined is tracked: `@scope` (then reset) decides for it and the
  # clauses after it; else earlier clauses' decision; else `all: true`. Sets
  # `@elixir_scope_vars`, which the rewritten clause reads, to the `vars:` filter (nil: all).
  def __scope__(mod, name, arity) do
    scope = Module.get_attribute(mod, :scope)
    if scope != nil, do: Module.put_attribute(mod, :scope, nil)
    tracked = Module.get_attribute(mod, :elixir_scope_tracked) || %{}
    key = {name, arity}

    opts =
      cond do
        scope == false -> nil
        scope == true -> []
        is_list(scope) -> Keyword.take(scope, [:vars])
        Map.has_key?(tracked, key) -> tracked[key]
        Module.get_attribute(mod, :elixir_scope_track_all) -> []
        true -> nil
      end

    if scope != nil,
      do: Module.put_attribute(mod, :elixir_scope_tracked, Map.put(tracked, key, opts))

    Module.put_attribute(mod, :elixir_scope_vars, opts && opts[:vars])
    opts
  end

  defp name_arity({:when, _, [head | _]}), do: name_arity(head)
  defp name_arity({name, _, args}) when is_list(args), do: {name, length(args)}
  defp name_arity({name, _, _}), do: {name, 0}

  @doc """
  Whether tracked functions are rewritten at compile time: `config :elixir_scope, track: bool`,
  by default true except in the `:prod` Mix environment.
  """
  @spec enabled?() :: boolean()
  def enabled? do
    default =
      not (Code.ensure_loaded?(Mix) and function_exported?(Mix, :env, 0) and Mix.env() == :prod)

    Application.get_env(:elixir_scope, :track, default)
  end
end
