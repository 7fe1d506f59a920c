//! `GET /openapi.json`: the OpenAPI 3.1 document of every partner and admin route.

use actix_web::HttpResponse;

pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::document())
}
