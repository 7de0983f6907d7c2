//! Reading the call stack out of a process dump (the text the VM gives a match spec's
//! `{message, {process_dump}}` action): the frames of its "Return addr" lines.

/// The callers in `dump`, innermost first, at most `max`: each the VM's text for a function
/// (`'Elixir.MyApp.Web':show/2`), without its code offset. Frames that are not functions
/// (`<terminate process normally>`) are left out. Never panics, whatever the bytes.
pub fn stack_frames(dump: &[u8], max: usize) -> Vec<&[u8]> {
    const MARK: &[u8] = b"Return addr ";
    let mut frames = Vec::new();
    let mut rest = dump;
    while frames.len() < max {
        let Some(at) = find(rest, MARK) else { break };
        rest = &rest[at + MARK.len()..];
        let line = &rest[..find(rest, b"\n").unwrap_or(rest.len())];
        let Some(open) = line.iter().position(|&b| b == b'(') else {
            continue;
        };
        let inner = &line[open + 1..];
        let Some(close) = inner.iter().rposition(|&b| b == b')') else {
            continue;
        };
        let frame = &inner[..close];
        let frame = match find(frame, b" + ") {
            Some(plus) => &frame[..plus],
            None => frame,
        };
        if !frame.is_empty() && !frame.starts_with(b"<") {
            frames.push(frame);
        }
    }
    frames
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_of_a_real_dump_innermost_first() {
        let dump = b"=proc:<0.104.0>\nStack dump:\nProgram counter: 0x00007f (x:y/0 + 68)\n\n\
0x00007fdf3a5defb8 Return addr 0x00007fdf35bf391c ('Elixir.PD':b/1 + 76)\n\ny(0) []\n\n\
0x00007fdf3a5defc0 Return addr 0x00007fdf35bf3894 ('Elixir.PD':a/1 + 76)\n\n\
0x00007fdf3a5defc8 Return addr 0x00007fdf38800c30 (<terminate process normally>)\n";
        let frames: Vec<&str> = stack_frames(dump, 16)
            .into_iter()
            .map(|f| std::str::from_utf8(f).unwrap())
            .collect();
        assert_eq!(frames, ["'Elixir.PD':b/1", "'Elixir.PD':a/1"]);
        assert_eq!(stack_frames(dump, 1).len(), 1);
    }

    #[test]
    fn any_bytes_are_read_without_panicking() {
        for case in [
            &b""[..],
            b"Return addr ",
            b"Return addr (",
            b"Return addr )(",
            b"Return addr (a + 1)",
            b"Return addr ()\nReturn addr (x:y/1)",
        ] {
            let _ = stack_frames(case, 8);
        }
        assert_eq!(stack_frames(b"Return addr 0x1 (m:f/1)", 8), [&b"m:f/1"[..]]);
    }
}
