//! What OTP's behaviours say about a process's state: which callbacks of a `gen_server` or a
//! `gen_statem` callback module return the new state, and where it is in their results.
//!
//! The rules work on any term representation through [`TermView`]: the NIF's live terms (on the
//! capture path, without encoding them) and the tests' own.

/// The atoms the rules look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Word {
    Ok,
    Noreply,
    Reply,
    Stop,
    NextState,
    KeepState,
    RepeatState,
    KeepStateAndData,
    RepeatStateAndData,
    StopAndReply,
    Throw,
    Init,
    HandleCall,
    HandleCast,
    HandleInfo,
    HandleContinue,
    HandleEvent,
    CodeChange,
    Terminate,
}

impl Word {
    /// The atom's name.
    pub fn name(self) -> &'static str {
        match self {
            Word::Ok => "ok",
            Word::Noreply => "noreply",
            Word::Reply => "reply",
            Word::Stop => "stop",
            Word::NextState => "next_state",
            Word::KeepState => "keep_state",
            Word::RepeatState => "repeat_state",
            Word::KeepStateAndData => "keep_state_and_data",
            Word::RepeatStateAndData => "repeat_state_and_data",
            Word::StopAndReply => "stop_and_reply",
            Word::Throw => "throw",
            Word::Init => "init",
            Word::HandleCall => "handle_call",
            Word::HandleCast => "handle_cast",
            Word::HandleInfo => "handle_info",
            Word::HandleContinue => "handle_continue",
            Word::HandleEvent => "handle_event",
            Word::CodeChange => "code_change",
            Word::Terminate => "terminate",
        }
    }
}

/// A term as the rules read it.
pub trait TermView: Copy {
    /// Whether the term is the atom `w`.
    fn is(self, w: Word) -> bool;
    /// The elements of the term when it is a tuple.
    fn tuple(self) -> Option<Vec<Self>>;
}

/// The callbacks of a `gen_server` module whose results carry the new state.
pub const GEN_SERVER_STATE_CALLBACKS: [(Word, u8); 6] = [
    (Word::Init, 1),
    (Word::HandleCall, 3),
    (Word::HandleCast, 2),
    (Word::HandleInfo, 2),
    (Word::HandleContinue, 2),
    (Word::CodeChange, 3),
];

/// Whether the function `(name, arity)` of a callback module of `kind` returns the process's
/// new state: for a `gen_server` the callbacks above; for a `gen_statem` `init/1`,
/// `handle_event/4`, `code_change/4` and its state functions (every function of arity 3 but
/// `terminate/3`). `is(w)` says whether the function's name is the atom `w`.
pub fn is_state_callback(statem: bool, is: impl Fn(Word) -> bool, arity: u8) -> bool {
    if statem {
        (is(Word::Init) && arity == 1)
            || ((is(Word::HandleEvent) || is(Word::CodeChange)) && arity == 4)
            || (arity == 3 && !is(Word::Terminate))
    } else {
        GEN_SERVER_STATE_CALLBACKS
            .iter()
            .any(|&(w, a)| a == arity && is(w))
    }
}

/// The value a callback threw, from an `exception_from`'s `{class, reason}`: `gen_server` and
/// `gen_statem` take `throw(result)` as the callback's result.
pub fn thrown<T: TermView>(class_reason: T) -> Option<T> {
    let els = class_reason.tuple()?;
    (els.len() == 2 && els[0].is(Word::Throw)).then(|| els[1])
}

/// The new state in a `gen_server` callback's result: `{:ok, S}` / `{:ok, S, _}` (init,
/// code_change), `{:noreply, S}` / `{:noreply, S, _}`, `{:reply, _, S}` / `{:reply, _, S, _}`,
/// `{:stop, _, S}` / `{:stop, _, _, S}`. `None` for another function (see
/// [`is_state_callback`]) or result.
pub fn gen_server_state<T: TermView>(is: impl Fn(Word) -> bool, arity: u8, value: T) -> Option<T> {
    if !is_state_callback(false, is, arity) {
        return None;
    }
    let els = value.tuple()?;
    let tag = *els.first()?;
    match els.len() {
        2 | 3 if tag.is(Word::Ok) || tag.is(Word::Noreply) => els.get(1).copied(),
        3 | 4 if tag.is(Word::Reply) => els.get(2).copied(),
        3 | 4 if tag.is(Word::Stop) => els.last().copied(),
        _ => None,
    }
}

/// What a `gen_statem` callback's result says about the state.
#[derive(Debug, PartialEq, Eq)]
pub enum Statem<T> {
    /// `{:next_state, Name, Data, ...}`, init's `{:ok, Name, Data, ...}`, code_change's
    /// `{:ok, Name, Data}`.
    New(T, T),
    /// Same state name, new data: `{:keep_state, Data, ...}`, `{:repeat_state, Data, ...}`,
    /// `{:stop, _, Data}`, `{:stop_and_reply, _, _, Data}`.
    Keep(T),
    /// `:keep_state_and_data`, `:repeat_state_and_data` (with or without actions).
    Same,
}

/// What a `gen_statem` callback's result says about the state; `None` for another function (see
/// [`is_state_callback`]) or result.
pub fn statem_result<T: TermView>(
    is: impl Fn(Word) -> bool,
    arity: u8,
    value: T,
) -> Option<Statem<T>> {
    if !is_state_callback(true, is, arity) {
        return None;
    }
    if value.is(Word::KeepStateAndData) || value.is(Word::RepeatStateAndData) {
        return Some(Statem::Same);
    }
    let els = value.tuple()?;
    let tag = *els.first()?;
    let n = els.len();
    if (tag.is(Word::NextState) || tag.is(Word::Ok)) && (3..=4).contains(&n) {
        Some(Statem::New(els[1], els[2]))
    } else if (tag.is(Word::KeepState) || tag.is(Word::RepeatState)) && (2..=3).contains(&n) {
        Some(Statem::Keep(els[1]))
    } else if tag.is(Word::KeepStateAndData) || tag.is(Word::RepeatStateAndData) {
        Some(Statem::Same)
    } else if (tag.is(Word::Stop) && n == 3) || (tag.is(Word::StopAndReply) && n == 4) {
        Some(Statem::Keep(els[n - 1]))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A term for the tests: an atom, a number or a tuple.
    #[derive(Clone, Debug, PartialEq)]
    enum T {
        A(&'static str),
        N(i64),
        Tup(Vec<T>),
    }

    impl TermView for &T {
        fn is(self, w: Word) -> bool {
            matches!(self, T::A(a) if *a == w.name())
        }
        fn tuple(self) -> Option<Vec<Self>> {
            match self {
                T::Tup(els) => Some(els.iter().collect()),
                _ => None,
            }
        }
    }

    fn named(name: &'static str) -> impl Fn(Word) -> bool {
        move |w| w.name() == name
    }

    fn tup(els: Vec<T>) -> T {
        T::Tup(els)
    }

    #[test]
    fn gen_server_results_carry_the_state_where_otp_puts_it() {
        use T::{A, N};
        let st = N(7);
        let cases = [
            ("init", 1, tup(vec![A("ok"), st.clone()])),
            ("init", 1, tup(vec![A("ok"), st.clone(), A("hibernate")])),
            ("handle_cast", 2, tup(vec![A("noreply"), st.clone()])),
            (
                "handle_info",
                2,
                tup(vec![A("noreply"), st.clone(), N(100)]),
            ),
            ("handle_call", 3, tup(vec![A("reply"), N(1), st.clone()])),
            (
                "handle_call",
                3,
                tup(vec![A("reply"), N(1), st.clone(), N(5)]),
            ),
            (
                "handle_call",
                3,
                tup(vec![A("stop"), A("normal"), st.clone()]),
            ),
            (
                "handle_call",
                3,
                tup(vec![A("stop"), A("normal"), N(1), st.clone()]),
            ),
            ("handle_continue", 2, tup(vec![A("noreply"), st.clone()])),
            ("code_change", 3, tup(vec![A("ok"), st.clone()])),
        ];
        for (f, arity, result) in &cases {
            assert_eq!(
                gen_server_state(named(f), *arity, result),
                Some(&st),
                "{f}/{arity}"
            );
        }
        // Not a state callback, a wrong arity, or a result without a state.
        let noreply = tup(vec![A("noreply"), st.clone()]);
        assert_eq!(gen_server_state(named("terminate"), 2, &noreply), None);
        assert_eq!(gen_server_state(named("handle_cast"), 3, &noreply), None);
        assert_eq!(gen_server_state(named("handle_cast"), 2, &A("ok")), None);
        assert_eq!(
            gen_server_state(named("handle_cast"), 2, &tup(vec![A("ignore")])),
            None
        );
        assert_eq!(
            gen_server_state(
                named("handle_call"),
                3,
                &tup(vec![A("noreply"), N(1), N(2), N(3)])
            ),
            None
        );
    }

    #[test]
    fn gen_statem_results_say_new_kept_or_same() {
        use T::{A, N};
        let (name, data) = (A("idle"), N(3));
        let state_fn = named("idle");
        let next = tup(vec![A("next_state"), name.clone(), data.clone()]);
        assert_eq!(
            statem_result(&state_fn, 3, &next),
            Some(Statem::New(&name, &data))
        );
        let init = tup(vec![A("ok"), name.clone(), data.clone(), tup(vec![])]);
        assert_eq!(
            statem_result(named("init"), 1, &init),
            Some(Statem::New(&name, &data))
        );
        let keep = tup(vec![A("keep_state"), data.clone()]);
        assert_eq!(
            statem_result(&state_fn, 3, &keep),
            Some(Statem::Keep(&data))
        );
        let stop = tup(vec![A("stop_and_reply"), A("normal"), N(0), data.clone()]);
        assert_eq!(
            statem_result(named("handle_event"), 4, &stop),
            Some(Statem::Keep(&data))
        );
        assert_eq!(
            statem_result(&state_fn, 3, &A("keep_state_and_data")),
            Some(Statem::Same)
        );
        let same = tup(vec![A("repeat_state_and_data"), tup(vec![])]);
        assert_eq!(statem_result(&state_fn, 3, &same), Some(Statem::Same));
        // terminate/3 is not a state function; arity 2 is no callback.
        assert_eq!(statem_result(named("terminate"), 3, &next), None);
        assert_eq!(statem_result(&state_fn, 2, &next), None);
    }

    #[test]
    fn a_thrown_result_is_the_callbacks_result() {
        use T::{A, N};
        let v = tup(vec![A("noreply"), N(1)]);
        assert_eq!(thrown(&tup(vec![A("throw"), v.clone()])), Some(&v));
        assert_eq!(thrown(&tup(vec![A("error"), v.clone()])), None);
    }

    #[test]
    fn state_callbacks_of_each_behaviour() {
        let is = |f: &'static str, a| is_state_callback(false, named(f), a);
        assert!(is("handle_call", 3) && is("init", 1) && is("code_change", 3));
        assert!(!is("terminate", 2) && !is("handle_call", 2) && !is("format_status", 1));
        let st = |f: &'static str, a| is_state_callback(true, named(f), a);
        assert!(st("init", 1) && st("handle_event", 4) && st("code_change", 4) && st("idle", 3));
        assert!(!st("terminate", 3) && !st("callback_mode", 0) && !st("idle", 2));
    }
}
