package proxy

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/stats"
)

// underscores applies the HCM common_http_protocol_options.headers_with_underscores_action to request
// header names, as Envoy's HTTP/1 codec does before any filter (ServerConnectionImpl::
// checkHeaderNameForUnderscores, source/common/http/http1/codec_impl.cc): REJECT_REQUEST answers 400 as
// a protocol error and closes the connection (http1.requests_rejected_with_underscores_in_headers);
// DROP_HEADER removes each such header (http1.dropped_headers_with_underscores).
type underscores struct {
	action   config.UnderscoresAction
	hcm      *connManager
	rejected *stats.Counter
	dropped  *stats.Counter
	next     http.Handler
}

var _ http.Handler = (*underscores)(nil)

func newUnderscores(action config.UnderscoresAction, hcm *connManager, store *stats.Store, next http.Handler) http.Handler {
	if action == config.UnderscoresAllow {
		return next
	}
	return &underscores{action: action, hcm: hcm, next: next,
		rejected: store.Counter("http1.requests_rejected_with_underscores_in_headers"),
		dropped:  store.Counter("http1.dropped_headers_with_underscores")}
}

func (u *underscores) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for k := range r.Header {
		if !strings.Contains(k, "_") {
			continue
		}
		if u.action == config.UnderscoresDropHeader {
			delete(r.Header, k)
			u.dropped.Inc()
			continue
		}
		u.rejected.Inc()
		// A codec protocol error: counted as the server's own rejections are (connManager.rejected),
		// answered 400 "Bad Request" and the connection closed.
		u.hcm.rejected(http.StatusBadRequest)
		infoOf(r).fail(flagDownstreamProtocolError, "http1.unexpected_underscore") // DPE
		w.Header()["Connection"] = connectionClose["Connection"]
		body := http.StatusText(http.StatusBadRequest)
		w.Header().Set(hdrContentType, "text/plain")
		w.Header().Set(hdrContentLength, strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(body))
		infoOf(r).sent(http.StatusBadRequest, int64(len(body)))
		return
	}
	u.next.ServeHTTP(w, r)
}
