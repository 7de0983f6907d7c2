//! Every atom the NIFs use, created once at load.

rustler::atoms! {
    ok,
    error,
    nil,
    // erl_tracer answers
    trace,
    discard,
    remove,
    // trace tags
    trace_status,
    elixir_scope_null_tracer,
    send,
    send_to_non_existing_process,
    receive,
    call,
    return_from,
    exception_from,
    spawn,
    exit,
    link,
    unlink,
    register,
    unregister,
    extra,
    // event kinds not named like their tag
    send_to_dead,
    #[allow(non_upper_case_globals)]
    return_ = "return",
    exception,
    // errors and options
    invalid_option,
    store_closed,
    process,
    event,
    // stats keys
    events,
    dropped,
    truncated,
    bytes,
    payload_bytes,
    capacity,
    max_bytes,
    max_payload_bytes,
    tracing_level,
    sample_rate,
    sample_by,
    last_seq,
}
