//! The report answer: JSON or CSV of the engine's [`engine::stats::Report`]. The figures
//! are the engine's; this only chooses the representation.

use crate::reply::{self, Answer};
use engine::stats::Report;
use hyper::header::{HeaderValue, CONTENT_DISPOSITION};
use hyper::StatusCode;

pub fn answer(report: &Report, csv: bool) -> Answer {
    if !csv {
        return reply::json(StatusCode::OK, report);
    }
    let mut answer = reply::bytes(StatusCode::OK, reply::CSV, report.to_csv());
    answer.headers_mut().insert(
        CONTENT_DISPOSITION,
        HeaderValue::from_static("inline; filename=\"report.csv\""),
    );
    answer
}
