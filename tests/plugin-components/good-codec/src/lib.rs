const CODEC_VERSION: &str = "1";
include!("codec_body.rs");
