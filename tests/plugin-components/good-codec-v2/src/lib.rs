const CODEC_VERSION: &str = "2";
include!("../../good-codec/src/codec_body.rs");
