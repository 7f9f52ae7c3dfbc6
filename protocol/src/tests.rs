//! Round trips of every message, and the frame reader against truncated,
//! oversized and random input.

use proptest::prelude::*;

use crate::*;

fn arb_string() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_ .:/-]{0,24}"
}

fn arb_datatype() -> impl Strategy<Value = DataType> {
    proptest::sample::select(DataType::ALL.to_vec())
}

fn arb_tensor() -> impl Strategy<Value = Tensor> {
    (
        arb_string(),
        arb_datatype(),
        proptest::collection::vec(0u64..5, 0..4),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(name, datatype, shape, data)| Tensor {
            name,
            datatype,
            shape,
            data,
        })
}

fn arb_tensor_info() -> impl Strategy<Value = TensorInfo> {
    (
        arb_string(),
        arb_datatype(),
        proptest::collection::vec(-1i64..100, 0..4),
    )
        .prop_map(|(name, datatype, shape)| TensorInfo {
            name,
            datatype,
            shape,
        })
}

fn arb_device() -> impl Strategy<Value = Device> {
    prop_oneof![
        Just(Device::Cpu),
        any::<u32>().prop_map(|ordinal| Device::Cuda { ordinal })
    ]
}

fn arb_image_format() -> impl Strategy<Value = ImageFormat> {
    prop_oneof![
        Just(ImageFormat::Jpeg),
        Just(ImageFormat::Png),
        (any::<u32>(), any::<u32>())
            .prop_map(|(width, height)| ImageFormat::RawRgb { width, height }),
        (any::<u32>(), any::<u32>())
            .prop_map(|(width, height)| ImageFormat::RawBgr { width, height }),
    ]
}

fn arb_input() -> impl Strategy<Value = InferInput> {
    prop_oneof![
        proptest::collection::vec(arb_tensor(), 0..3).prop_map(InferInput::Tensors),
        (
            arb_image_format(),
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::option::of(arb_string()),
            proptest::option::of(arb_string()),
        )
            .prop_map(
                |(format, data, frame_id, camera_id)| InferInput::Frame(Frame {
                    format,
                    data,
                    frame_id,
                    camera_id
                })
            ),
    ]
}

fn arb_load_error_kind() -> impl Strategy<Value = LoadErrorKind> {
    proptest::sample::select(vec![
        LoadErrorKind::Contract,
        LoadErrorKind::Runtime,
        LoadErrorKind::Weights,
        LoadErrorKind::TensorMismatch,
        LoadErrorKind::Plugin,
        LoadErrorKind::Warmup,
        LoadErrorKind::OutOfMemory,
        LoadErrorKind::Protocol,
    ])
}

fn arb_infer_error_kind() -> impl Strategy<Value = InferErrorKind> {
    proptest::sample::select(vec![
        InferErrorKind::InvalidInput,
        InferErrorKind::Timeout,
        InferErrorKind::Cancelled,
        InferErrorKind::PluginException,
        InferErrorKind::InvalidOutput,
        InferErrorKind::Overloaded,
        InferErrorKind::Internal,
    ])
}

fn arb_stats() -> impl Strategy<Value = WorkerStats> {
    (any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>()).prop_map(
        |(rss_bytes, requests_served, requests_failed, in_flight)| WorkerStats {
            rss_bytes,
            requests_served,
            requests_failed,
            in_flight,
        },
    )
}

fn arb_check() -> impl Strategy<Value = HealthCheck> {
    prop_oneof![
        Just(HealthCheck::Undefined),
        Just(HealthCheck::Passed),
        arb_string().prop_map(|message| HealthCheck::Failed { message }),
    ]
}

fn arb_to_worker() -> impl Strategy<Value = ToWorker> {
    prop_oneof![
        any::<u16>().prop_map(|protocol_version| ToWorker::Welcome { protocol_version }),
        arb_string().prop_map(|reason| ToWorker::Refused { reason }),
        (
            arb_string(),
            arb_device(),
            any::<u32>(),
            proptest::option::of(arb_string()),
            proptest::option::of(arb_string()),
            any::<bool>(),
            (any::<u64>(), any::<u64>(), any::<u64>()),
        )
            .prop_map(
                |(
                    model_dir,
                    device,
                    intra_op_threads,
                    onnxruntime_library,
                    python,
                    warmup,
                    (preprocess_ms, inference_ms, postprocess_ms),
                )| {
                    ToWorker::Load(LoadRequest {
                        model_dir,
                        device,
                        intra_op_threads,
                        onnxruntime_library,
                        python,
                        warmup,
                        phase_limits: PhaseLimits {
                            preprocess_ms,
                            inference_ms,
                            postprocess_ms,
                        },
                    })
                }
            ),
        (
            any::<u64>(),
            any::<u64>(),
            arb_input(),
            proptest::collection::vec(arb_string(), 0..3),
            proptest::option::of(arb_string())
        )
            .prop_map(|(id, budget_us, input, outputs, trace_id)| ToWorker::Infer(
                InferRequest {
                    id: RequestId(id),
                    budget_us,
                    input,
                    outputs,
                    trace_id,
                }
            )),
        any::<u64>().prop_map(|id| ToWorker::Cancel { id: RequestId(id) }),
        any::<u64>().prop_map(|seq| ToWorker::Ping { seq }),
        Just(ToWorker::Shutdown),
    ]
}

fn arb_from_worker() -> impl Strategy<Value = FromWorker> {
    prop_oneof![
        (any::<u16>(), any::<u32>(), arb_string()).prop_map(|(protocol_version, pid, token)| {
            FromWorker::Hello(Hello {
                protocol_version,
                pid,
                token,
            })
        }),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(arb_tensor_info(), 0..3),
            proptest::collection::vec(arb_tensor_info(), 0..3),
        )
            .prop_map(|(load_us, warmup_us, rss_bytes, inputs, outputs)| {
                FromWorker::Loaded(Loaded {
                    load_us,
                    warmup_us,
                    rss_bytes,
                    inputs,
                    outputs,
                })
            }),
        (arb_load_error_kind(), arb_string())
            .prop_map(|(kind, message)| FromWorker::LoadFailed(LoadFailed { kind, message })),
        (
            any::<u64>(),
            proptest::collection::vec(arb_tensor(), 0..3),
            proptest::option::of(arb_string()),
            (any::<u64>(), any::<u64>(), any::<u64>()),
        )
            .prop_map(|(id, outputs, structured, (p, i, q))| {
                FromWorker::InferOk(InferOk {
                    id: RequestId(id),
                    outputs,
                    structured,
                    timings: Timings {
                        preprocess_us: p,
                        infer_us: i,
                        postprocess_us: q,
                    },
                })
            }),
        (
            any::<u64>(),
            arb_infer_error_kind(),
            arb_string(),
            proptest::option::of(arb_string())
        )
            .prop_map(
                |(id, kind, message, exception)| FromWorker::InferErr(InferError {
                    id: RequestId(id),
                    kind,
                    message,
                    exception,
                })
            ),
        (any::<u64>(), arb_stats(), arb_check()).prop_map(|(seq, stats, check)| FromWorker::Pong {
            seq,
            stats,
            check
        }),
    ]
}

fn round_trip<M: Message + PartialEq + std::fmt::Debug>(msg: &M) {
    let limit = FrameLimit::DEFAULT;
    let mut wire = Vec::new();
    let mut scratch = Vec::new();
    write_message(&mut wire, msg, limit, &mut scratch).unwrap();
    // Through the blocking reader...
    let back: M = read_message(&mut wire.as_slice(), limit, &mut scratch).unwrap();
    assert_eq!(&back, msg);
    // ...and through the zero-copy splitter.
    let (payload, used) = limit.split(&wire).unwrap().unwrap();
    assert_eq!(used, wire.len());
    assert_eq!(&M::decode(payload).unwrap(), msg);
}

proptest! {
    #[test]
    fn every_to_worker_message_round_trips(msg in arb_to_worker()) {
        round_trip(&msg);
    }

    #[test]
    fn every_from_worker_message_round_trips(msg in arb_from_worker()) {
        round_trip(&msg);
    }

    /// Any bytes at all: a typed error or a message, never a panic, and never a
    /// buffer larger than the limit.
    #[test]
    fn random_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let limit = FrameLimit::new(128);
        let mut buf = Vec::new();
        let _ = read_message::<FromWorker>(&mut bytes.as_slice(), limit, &mut buf);
        prop_assert!(buf.len() <= 128);
        let _ = limit.split(&bytes);
        let _ = FromWorker::decode(&bytes);
        let _ = ToWorker::decode(&bytes);
    }

    /// A valid frame cut anywhere is a typed truncation, never a message.
    #[test]
    fn truncated_frames_are_typed_errors(msg in arb_from_worker(), cut in any::<prop::sample::Index>()) {
        let mut wire = Vec::new();
        FrameLimit::DEFAULT.encode(&msg, &mut wire).unwrap();
        let cut = cut.index(wire.len());
        let mut buf = Vec::new();
        let err = read_message::<FromWorker>(&mut &wire[..cut], FrameLimit::DEFAULT, &mut buf).unwrap_err();
        if cut == 0 {
            prop_assert!(matches!(err, ProtocolError::Closed));
        } else {
            prop_assert!(matches!(err, ProtocolError::Truncated { .. }), "{err:?}");
        }
        prop_assert_eq!(FrameLimit::DEFAULT.split(&wire[..cut]).unwrap(), None);
    }
}

#[test]
fn oversized_frames_are_refused_before_allocation() {
    let limit = FrameLimit::new(1024);
    // A header announcing 4 GiB - 1 bytes, followed by nothing.
    let wire = u32::MAX.to_le_bytes();
    let mut buf = Vec::new();
    let err = read_message::<FromWorker>(&mut wire.as_slice(), limit, &mut buf).unwrap_err();
    assert!(
        matches!(err, ProtocolError::FrameTooLarge { len, max: 1024 } if len == u64::from(u32::MAX))
    );
    assert_eq!(
        buf.capacity(),
        0,
        "nothing may be allocated for a refused frame"
    );
    assert!(matches!(
        limit.split(&wire),
        Err(ProtocolError::FrameTooLarge { .. })
    ));
}

#[test]
fn writer_refuses_messages_above_the_limit() {
    let limit = FrameLimit::new(64);
    let msg = FromWorker::InferOk(InferOk {
        id: RequestId(1),
        outputs: vec![Tensor::from_f32("y", vec![100], &[0.0; 100])],
        structured: None,
        timings: Timings::default(),
    });
    let mut buf = Vec::new();
    let err = write_message(&mut Vec::new(), &msg, limit, &mut buf).unwrap_err();
    assert!(matches!(err, ProtocolError::FrameTooLarge { max: 64, .. }));
}

#[test]
fn empty_frames_and_trailing_bytes_are_typed_errors() {
    let mut buf = Vec::new();
    let err = read_message::<ToWorker>(&mut [0u8; 4].as_slice(), FrameLimit::DEFAULT, &mut buf)
        .unwrap_err();
    assert!(matches!(err, ProtocolError::EmptyFrame));

    let mut payload = Vec::new();
    ToWorker::Shutdown.encode(&mut payload).unwrap();
    payload.push(0);
    assert!(matches!(
        ToWorker::decode(&payload),
        Err(ProtocolError::TrailingBytes { trailing: 1, .. })
    ));
}

#[test]
fn a_lying_length_inside_a_payload_is_malformed_not_an_allocation() {
    // Hello { protocol_version, pid, token } with a token length of 2^60.
    let mut payload = Vec::new();
    payload.extend_from_slice(&0u32.to_le_bytes()); // variant Hello
    payload.extend_from_slice(&1u16.to_le_bytes());
    payload.extend_from_slice(&7u32.to_le_bytes());
    payload.extend_from_slice(&(1u64 << 60).to_le_bytes());
    payload.extend_from_slice(b"abc");
    assert!(matches!(
        FromWorker::decode(&payload),
        Err(ProtocolError::Malformed { .. })
    ));
}

#[test]
fn encoding_is_bincode_compatible() {
    // bincode's default (legacy) layout: u32 variant tag, fixed-width LE
    // integers, u64 lengths. Pinned here so a codec change cannot slip by.
    let mut payload = Vec::new();
    ToWorker::Cancel { id: RequestId(5) }
        .encode(&mut payload)
        .unwrap();
    assert_eq!(payload, [4, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0]);
    let mut payload = Vec::new();
    ToWorker::Refused {
        reason: "no".into(),
    }
    .encode(&mut payload)
    .unwrap();
    assert_eq!(payload, [1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, b'n', b'o']);
    // Pong (tag 5): seq, the four stats, then the check's tag and payload.
    let mut payload = Vec::new();
    FromWorker::Pong {
        seq: 1,
        stats: WorkerStats::default(),
        check: HealthCheck::Failed {
            message: "x".into(),
        },
    }
    .encode(&mut payload)
    .unwrap();
    let mut expected = vec![5, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
    expected.extend([0; 8 * 3 + 4]);
    expected.extend([2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, b'x']);
    assert_eq!(payload, expected);
}
