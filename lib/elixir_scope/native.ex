defmodule ElixirScope.Native do
  # The one module of NIF stubs, and the `erl_tracer` module handed to :erlang.trace/3: its
  # enabled/3 and trace/5 are NIFs whose tracer state is the store resource.
  @moduledoc false

  @on_load :load_nif

  @doc false
  def load_nif do
    case :code.priv_dir(:elixir_scope) do
      # No priv directory (the code loaded from a directory not named after the app): nothing
      # is loaded, and the stubs say so.
      {:error, reason} ->
        :persistent_term.put({__MODULE__, :load_error}, {:no_priv_dir, inspect(reason)})
        :ok

      priv ->
        load_nif(:filename.join(priv, ~c"native/elixir_scope_nif"))
    end
  end

  defp load_nif(path) do
    case :erlang.load_nif(path, 0) do
      :ok ->
        :ok

      {:error, {:reload, _}} ->
        :ok

      {:error, {reason, text}} ->
        # Keep the module loadable (its stubs then explain the problem) rather than fail every
        # module that refers to it, e.g. while the library is compiled before the NIF is built.
        :persistent_term.put({__MODULE__, :load_error}, {reason, List.to_string(text)})
        :ok
    end
  end

  # Store
  def store_new(_config), do: err()
  def store_check(_config), do: err()
  def store_limits, do: err()
  def store_handle(_store), do: err()
  def store_close(_store), do: err()
  def store_captures(_store), do: err()
  def store_set_level(_store, _level), do: err()
  def store_set_sampling(_store, _rate, _by), do: err()
  def store_stats(_store), do: err()
  def store_release_pool, do: err()

  # JSON (the HTTP front door's)
  def json_encode(_term), do: err()
  def json_decode(_binary), do: err()

  # Query
  def query_events(_store, _filter), do: err()
  def query_match(_store, _filter, _pattern, _guard, _vars, _events?), do: err()
  def query_count(_store, _filter, _by, _pattern, _guard, _vars), do: err()
  def query_durations(_store, _filter, _by), do: err()
  def query_pid_counts(_store), do: err()

  # History
  def store_watch_states(_store, _module, _kind), do: err()
  def store_set_watcher(_store, _pid), do: err()
  def store_record(_store, _kind, _pid, _mfa, _term), do: err()
  def store_set_rate_cap(_store, _limit, _window_ms), do: err()
  def query_state_at(_store, _pid, _at), do: err()
  def query_states(_store, _pid, _from, _to, _changes_only), do: err()
  def query_pending(_store, _pid, _at), do: err()
  def query_key_changes(_store, _pid, _key), do: err()
  def query_call_stack(_store, _pid, _at), do: err()
  def query_paired(_store, _seq), do: err()
  def query_message_pairs(_store, _pid), do: err()
  def query_inbox_complete(_store), do: err()
  def query_evicted(_store, _pid), do: err()
  def store_carry_states(_store), do: err()
  def query_active(_store, _at), do: err()
  def query_snapshot(_store, _at), do: err()

  # Persistence: writing a capture's trace (persist_*), and trace files on disk (disk_*)
  def persist_start(_store, _dir, _seg_bytes, _seg_ns, _max_bytes, _max_age_ns, _archive),
    do: err()

  def persist_flush(_store, _max), do: err()
  def persist_finish(_store), do: err()
  def persist_move(_from, _to), do: err()
  def disk_save_begin(_store, _dir), do: err()
  def disk_save_step(_saving, _store), do: err()
  def disk_save_finish(_saving), do: err()
  def disk_load_begin(_path, _since, _until), do: err()
  def disk_load_step(_loading), do: err()
  def disk_load_finish(_loading), do: err()
  def disk_foreign_nodes, do: err()
  def disk_clock(_path), do: err()
  def disk_damage(_store), do: err()
  def disk_follow(_dir), do: err()
  def disk_follow_refresh(_store), do: err()
  def disk_summary_begin(_path, _footers?), do: err()
  def disk_summary_step(_summarizing), do: err()
  def disk_summary_finish(_summarizing), do: err()

  # Variable tracking
  def track_record(_store, _call, _mfa, _payload), do: err()

  # Tracing
  def trace_state_callbacks(_kind, _functions), do: err()

  # erl_tracer callbacks
  def enabled(_tag, _state, _tracee), do: err()
  def trace(_tag, _state, _tracee, _term, _opts), do: err()

  defp err do
    {reason, text} = :persistent_term.get({__MODULE__, :load_error}, {:not_loaded, "unknown"})

    :erlang.nif_error(
      {:nif_not_loaded,
       "ElixirScope's native library could not be loaded (#{reason}: #{text}). " <>
         "Build it with `mix compile` (needs Rust's cargo on the PATH), or " <>
         "`mix compile.elixir_scope_native --force` to rebuild."}
    )
  end
end
