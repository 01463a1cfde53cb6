//! The four APIs' handlers: Anthropic Messages, OpenAI Responses and Chat Completions, and
//! Gemini — each answering the scripted step in its own wire format, streamed or not.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::play::{
    ApiRequest, Call, call_for, cut_body, error_response, error_text, hang, model_of, sse, sse_cut,
    wants_stream,
};
use crate::{Api, INPUT_TOKENS, OUTPUT_TOKENS, Shared, Step};

pub(crate) async fn count_tokens(req: ApiRequest) -> Response {
    req.record_side(Api::Anthropic, false);
    axum::Json(json!({"input_tokens": INPUT_TOKENS})).into_response()
}

pub(crate) async fn anthropic(req: ApiRequest) -> Response {
    let step = req.step(Api::Anthropic, "Scripted side answer");
    let ApiRequest { shared, body, .. } = req;
    let model = model_of(&body, "claude-sonnet-4-5");
    let (block, stop) = match &step {
        Step::Hang => return hang(),
        Step::Fail { status, retry_after } => {
            let ty = match status {
                401 => "authentication_error",
                403 => "permission_error",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            return error_response(
                *status,
                *retry_after,
                json!({"type": "error", "error": {"type": ty, "message": error_text(*status)}}),
            );
        }
        Step::Answer(t) | Step::CutOff(t) => (json!({"type": "text", "text": t}), "end_turn"),
        other => match call_for(&shared, Api::Anthropic, &body, other) {
            Some(c) => (
                json!({"type": "tool_use", "id": shared.next_id("toolu"), "name": c.name, "input": c.args}),
                "tool_use",
            ),
            None => (
                json!({"type": "text", "text": "No suitable tool offered."}),
                "end_turn",
            ),
        },
    };
    let id = shared.next_id("msg");
    let usage = json!({"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0});
    let cut = matches!(step, Step::CutOff(_));
    if !wants_stream(&body) {
        let message = json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": [block], "stop_reason": stop, "stop_sequence": null, "usage": usage,
        });
        if cut {
            return cut_body(&message);
        }
        return axum::Json(message).into_response();
    }
    let mut out = String::new();
    let mut ev = |name: &str, data: Value| {
        out.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    };
    ev(
        "message_start",
        json!({"type": "message_start", "message": {
        "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": 1,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
    );
    match block.get("type").and_then(Value::as_str) {
        Some("tool_use") => {
            ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}),
            );
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": block["input"].to_string()}}),
            );
        }
        _ => {
            ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            );
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": block["text"]}}),
            );
        }
    }
    if cut {
        return sse_cut(out);
    }
    ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    );
    ev(
        "message_delta",
        json!({"type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": null},
        "usage": {"output_tokens": OUTPUT_TOKENS}}),
    );
    ev("message_stop", json!({"type": "message_stop"}));
    sse(out)
}

// ---------------------------------------------------------------- OpenAI Responses

pub(crate) async fn responses(req: ApiRequest) -> Response {
    let step = req.step(Api::Responses, "Scripted side answer");
    let ApiRequest { shared, body, .. } = req;
    let model = model_of(&body, "gpt-5.5");
    let item = match &step {
        Step::Hang => return hang(),
        Step::Fail { status, retry_after } => {
            return openai_error(*status, *retry_after);
        }
        Step::Answer(t) | Step::CutOff(t) => message_item(&shared, t),
        other => match call_for(&shared, Api::Responses, &body, other) {
            Some(Call {
                name,
                custom_input: Some(input),
                ..
            }) => json!({
                "type": "custom_tool_call", "id": shared.next_id("ctc"), "status": "completed",
                "call_id": shared.next_id("call"), "name": name, "input": input}),
            Some(c) => {
                let mut call = json!({
                "type": "function_call", "id": shared.next_id("fc"), "status": "completed",
                "call_id": shared.next_id("call"), "name": c.name, "arguments": c.args.to_string()});
                // A tool offered inside a namespace is called by its own name plus the namespace.
                if let Some((ns, inner)) = crate::request::responses_namespace(&body, &c.name) {
                    call["name"] = json!(inner);
                    call["namespace"] = json!(ns);
                }
                call
            }
            None => message_item(&shared, "No suitable tool offered."),
        },
    };
    let resp_id = shared.next_id("resp");
    let usage = json!({"input_tokens": INPUT_TOKENS, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": OUTPUT_TOKENS, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS});
    let response = |status: &str, output: Value, usage: Value| {
        json!({
        "id": resp_id, "object": "response", "created_at": 0, "status": status, "model": model,
        "output": output, "usage": usage})
    };
    let cut = matches!(step, Step::CutOff(_));
    if !wants_stream(&body) {
        let done = response("completed", json!([item]), usage);
        if cut {
            return cut_body(&done);
        }
        return axum::Json(done).into_response();
    }
    let mut out = String::new();
    let mut seq = 0u64;
    let mut ev = |name: &str, mut data: Value| {
        data["type"] = json!(name);
        data["sequence_number"] = json!(seq);
        seq += 1;
        out.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    };
    ev(
        "response.created",
        json!({"response": response("in_progress", json!([]), Value::Null)}),
    );
    let mut added = item.clone();
    if item["type"] == "message" {
        added["content"] = json!([]);
        added["status"] = json!("in_progress");
    }
    ev(
        "response.output_item.added",
        json!({"output_index": 0, "item": added}),
    );
    if item["type"] == "message" {
        ev(
            "response.output_text.delta",
            json!({"item_id": item["id"], "output_index": 0,
            "content_index": 0, "delta": item["content"][0]["text"]}),
        );
    }
    if cut {
        return sse_cut(out);
    }
    ev(
        "response.output_item.done",
        json!({"output_index": 0, "item": item}),
    );
    ev(
        "response.completed",
        json!({"response": response("completed", json!([item]), usage)}),
    );
    sse(out)
}

fn message_item(shared: &Shared, text: &str) -> Value {
    json!({"type": "message", "id": shared.next_id("msg"), "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

fn openai_error(status: u16, retry_after: Option<u64>) -> Response {
    let (ty, code) = match status {
        401 => ("invalid_request_error", "invalid_api_key"),
        429 => ("requests", "rate_limit_exceeded"),
        _ => ("server_error", "server_error"),
    };
    error_response(
        status,
        retry_after,
        json!({"error": {"message": error_text(status), "type": ty, "param": null, "code": code}}),
    )
}

// ---------------------------------------------------------------- OpenAI Chat Completions

pub(crate) async fn chat(req: ApiRequest) -> Response {
    let step = req.step(Api::ChatCompletions, "Scripted title");
    let ApiRequest { shared, body, .. } = req;
    let model = model_of(&body, "stub-model");
    let (message, finish) = match &step {
        Step::Hang => return hang(),
        Step::Fail { status, retry_after } => return openai_error(*status, *retry_after),
        Step::Answer(t) | Step::CutOff(t) => (json!({"role": "assistant", "content": t}), "stop"),
        other => match call_for(&shared, Api::ChatCompletions, &body, other) {
            Some(c) => (
                json!({"role": "assistant", "content": null, "tool_calls": [{
                    "index": 0, "id": shared.next_id("call"), "type": "function",
                    "function": {"name": c.name, "arguments": c.args.to_string()}}]}),
                "tool_calls",
            ),
            None => (
                json!({"role": "assistant", "content": "No suitable tool offered."}),
                "stop",
            ),
        },
    };
    let id = shared.next_id("chatcmpl");
    let usage = json!({"prompt_tokens": INPUT_TOKENS, "completion_tokens": OUTPUT_TOKENS,
        "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS});
    let cut = matches!(step, Step::CutOff(_));
    if !wants_stream(&body) {
        let mut m = message.clone();
        if let Some(calls) = m.get_mut("tool_calls").and_then(Value::as_array_mut) {
            for c in calls {
                if let Some(o) = c.as_object_mut() {
                    o.remove("index");
                }
            }
        }
        let done = json!({"id": id, "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": m, "finish_reason": finish}], "usage": usage});
        if cut {
            return cut_body(&done);
        }
        return axum::Json(done).into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        json!({"id": id, "object": "chat.completion.chunk",
        "created": 0, "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut out = String::new();
    out.push_str(&format!("data: {}\n\n", chunk(message, Value::Null)));
    if cut {
        return sse_cut(out);
    }
    out.push_str(&format!("data: {}\n\n", chunk(json!({}), json!(finish))));
    out.push_str(&format!(
        "data: {}\n\n",
        json!({"id": id, "object": "chat.completion.chunk",
        "created": 0, "model": model, "choices": [], "usage": usage})
    ));
    out.push_str("data: [DONE]\n\n");
    sse(out)
}

// ---------------------------------------------------------------- Gemini

pub(crate) async fn gemini(Path(model_action): Path<String>, req: ApiRequest) -> Response {
    let (model, action) = model_action
        .split_once(':')
        .unwrap_or((&model_action, "generateContent"));
    if action == "countTokens" {
        return axum::Json(json!({"totalTokens": INPUT_TOKENS})).into_response();
    }
    let step = req.step(Api::Gemini, "Scripted side answer");
    let ApiRequest { shared, body, .. } = req;
    let part = match &step {
        Step::Hang => return hang(),
        Step::Fail { status, retry_after } => {
            let (st, msg) = match status {
                401 => (
                    "UNAUTHENTICATED",
                    "API key not valid. Please pass a valid API key. (scripted)",
                ),
                403 => ("PERMISSION_DENIED", "Permission denied. (scripted)"),
                429 => (
                    "RESOURCE_EXHAUSTED",
                    "Resource has been exhausted (e.g. check quota). (scripted)",
                ),
                _ => ("INTERNAL", "Internal error. (scripted)"),
            };
            let mut err = json!({"error": {"code": status, "message": msg, "status": st}});
            if let Some(ra) = retry_after {
                err["error"]["details"] = json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": format!("{ra}s")}]);
            }
            return error_response(*status, *retry_after, err);
        }
        Step::Answer(t) | Step::CutOff(t) => json!({"text": t}),
        other => match call_for(&shared, Api::Gemini, &body, other) {
            Some(c) => json!({"functionCall": {"name": c.name, "args": c.args}}),
            None => json!({"text": "No suitable tool offered."}),
        },
    };
    let answer = json!({
        "candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": INPUT_TOKENS, "candidatesTokenCount": OUTPUT_TOKENS,
                          "totalTokenCount": INPUT_TOKENS + OUTPUT_TOKENS},
        "modelVersion": model,
    });
    match (action.starts_with("stream"), matches!(step, Step::CutOff(_))) {
        (true, false) => sse(format!("data: {answer}\r\n\r\n")),
        // Cut off: the text came, the candidate's finish reason and the usage never do.
        (true, true) => sse_cut(format!(
            "data: {}\r\n\r\n",
            json!({"candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0}],
                   "modelVersion": model})
        )),
        (false, false) => axum::Json(answer).into_response(),
        (false, true) => cut_body(&answer),
    }
}

pub(crate) async fn other(req: ApiRequest) -> Response {
    req.record_side(Api::Other, true);
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"error": {"message": "not scripted"}})),
    )
        .into_response()
}
