//! Trace files: recording events to disk and reading them back.

pub mod format;
pub mod reader;
pub mod writer;

#[cfg(test)]
mod tests {
    use vmatrace_common::{Call, Event, EventKind};

    use super::{
        format::{self, Checkpoint, Header, LimitRecord, LostRecord, ProcessInfo, Record},
        reader::{self, Ending},
    };

    fn sample_trace() -> Vec<u8> {
        let mut data = format::preamble().to_vec();
        let header = Header {
            tool_version: "0.1.0".into(),
            hostname: "host".into(),
            kernel_release: "6.18".into(),
            max_map_count: 65530,
            warn_at: 58977,
            clock_offset_ns: 1_700_000_000_000_000_000,
            start_ns: 100,
            task_mm_offset: 1,
            mm_map_count_offset: 2,
            command_line: "vmatrace -o x".into(),
        };
        data.extend_from_slice(&format::encode(&Record::Header(header)));
        data.extend_from_slice(&format::encode(&Record::Process(ProcessInfo {
            pid: 7,
            at_ns: 110,
            cmdline: "sleep 1".into(),
            maps: "a\nb\n".into(),
        })));
        let mut event = Event::zeroed();
        event.kind = EventKind::Syscall as u8;
        event.call = Call::Munmap as u8;
        event.pid = 7;
        event.vmas_before = 10;
        event.vmas_after = 11;
        event.locked = 1;
        data.extend_from_slice(&format::encode(&Record::Event(event)));
        data.extend_from_slice(&format::encode(&Record::Checkpoint(Checkpoint {
            at_ns: 200,
            counts: vec![(7, 11)],
        })));
        data.extend_from_slice(&format::encode(&Record::Lost(LostRecord::default())));
        data.extend_from_slice(&format::encode(&Record::Limit(LimitRecord {
            at_ns: 300,
            max_map_count: 1000,
            warn_at: 900,
        })));
        data.extend_from_slice(&format::encode(&Record::End { events: 1 }));
        data
    }

    #[test]
    fn round_trip_reads_every_record_and_a_clean_end() {
        let trace = reader::parse(&sample_trace(), "t").expect("parses");
        assert_eq!(trace.header.max_map_count, 65530);
        assert_eq!(trace.records.len(), 6);
        assert_eq!(trace.ending, Ending::Clean);
        match &trace.records[1] {
            Record::Event(e) => assert_eq!((e.pid, e.vmas_after), (7, 11)),
            other => panic!("{other:?}"),
        }
        match &trace.records[4] {
            Record::Limit(l) => assert_eq!((l.at_ns, l.max_map_count, l.warn_at), (300, 1000, 900)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_cut_reads_back_what_precedes_it() {
        let data = sample_trace();
        let full = reader::parse(&data, "t").unwrap();
        let boundaries: Vec<usize> = {
            // Offsets where each record after the header ends.
            let mut ends = Vec::new();
            let mut offset = format::PREAMBLE_LEN;
            while offset < data.len() {
                let (_, len) = format::decode(&data[offset..]).unwrap();
                offset += len;
                ends.push(offset);
            }
            ends
        };
        let header_end = boundaries[0];
        for cut in 0..data.len() {
            match reader::parse(&data[..cut], "t") {
                Err(e) => assert!(cut < header_end, "cut at {cut}: {e}"),
                Ok(trace) => {
                    let complete = boundaries[1..].iter().filter(|end| **end <= cut).count();
                    assert_eq!(trace.records.len(), complete, "cut at {cut}");
                    let expected_end = if boundaries.contains(&cut) {
                        Ending::Unclosed
                    } else {
                        Ending::Truncated {
                            offset: boundaries
                                .iter()
                                .rev()
                                .find(|e| **e <= cut)
                                .copied()
                                .unwrap() as u64,
                        }
                    };
                    assert_eq!(trace.ending, expected_end, "cut at {cut}");
                }
            }
        }
        assert_eq!(full.records.len(), boundaries.len() - 1);
    }

    #[test]
    fn a_flipped_byte_in_any_record_stops_there_and_keeps_the_rest() {
        let data = sample_trace();
        let mut starts = Vec::new();
        let mut offset = format::PREAMBLE_LEN;
        while offset < data.len() {
            starts.push(offset);
            offset += format::decode(&data[offset..]).unwrap().1;
        }
        for (index, start) in starts.iter().enumerate().skip(1) {
            for position in [*start, start + 4, start + 9] {
                let mut damaged = data.clone();
                damaged[position] ^= 0x40;
                let trace = reader::parse(&damaged, "t").expect("the header is intact");
                assert_eq!(trace.records.len(), index - 1, "flip at {position}");
                assert!(
                    matches!(trace.ending, Ending::Corrupt { offset, .. } | Ending::Truncated { offset } if offset == *start as u64),
                    "flip at {position}: {:?}",
                    trace.ending
                );
            }
        }
    }

    #[test]
    fn a_huge_length_field_is_damage_not_an_allocation() {
        let mut data = sample_trace();
        let second =
            format::PREAMBLE_LEN + format::decode(&data[format::PREAMBLE_LEN..]).unwrap().1;
        data[second + 4..second + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        let trace = reader::parse(&data, "t").unwrap();
        assert!(trace.records.is_empty());
        assert!(
            matches!(trace.ending, Ending::Corrupt { .. }),
            "{:?}",
            trace.ending
        );
    }

    #[test]
    fn not_a_trace_and_newer_versions_are_refused() {
        use crate::error::exit_code;
        assert_eq!(
            reader::parse(b"", "t").unwrap_err().exit_code(),
            exit_code::NOT_A_TRACE
        );
        assert_eq!(
            reader::parse(b"hello world, no trace", "t")
                .unwrap_err()
                .exit_code(),
            exit_code::NOT_A_TRACE
        );
        let mut newer = sample_trace();
        newer[8] = 99;
        assert_eq!(
            reader::parse(&newer, "t").unwrap_err().exit_code(),
            exit_code::NEWER_FORMAT
        );
        let mut bad_header = sample_trace();
        bad_header[format::PREAMBLE_LEN + 10] ^= 1;
        assert_eq!(
            reader::parse(&bad_header, "t").unwrap_err().exit_code(),
            exit_code::CORRUPT
        );
    }
}
