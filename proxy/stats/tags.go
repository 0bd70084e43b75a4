package stats

import (
	"regexp"
	"strings"
)

// Tag is a label that a tag extractor takes out of a stat name: Name is Envoy's tag name
// ("envoy.cluster_name"), Value what the stat name held in its place.
type Tag struct{ Name, Value string }

// tagExtractor is one of Envoy's default tag extractors (TagNameValues, source/common/config/
// well_known_names.cc), in one of Envoy's two forms: a regular expression whose first group is the
// part of the name to remove and whose second is the tag's value (TagExtractorStdRegexImpl), or a
// dotted token pattern where "$" is the value, "*" any one token and a final "**" one or more
// (TagExtractorTokensImpl, source/common/stats/tag_extractor_impl.cc).
type tagExtractor struct {
	name   string
	re     *regexp.Regexp
	tokens []string
	// not is a value the extractor never takes (Envoy's negative_matching_value).
	not string
}

// defaultTagExtractors are those of Envoy's defaults that apply to the stats the proxy emits, in
// Envoy's order: it is the order of the labels.
var defaultTagExtractors = []tagExtractor{
	// *_rq(_<response_code>): upstream_rq_503, retry.upstream_rq_503.
	{name: "envoy.response_code", re: regexp.MustCompile(`_rq(_(\d{3}))$`)},
	// *_rq_(<response_code_class>)xx: upstream_rq_5xx, downstream_rq_2xx.
	{name: "envoy.response_code_class", re: regexp.MustCompile(`_rq_((\d))xx$`)},
	// vhost.[<virtual host name>.]vcluster.(<virtual_cluster_name>.)<base_stat>
	{name: "envoy.virtual_cluster", tokens: []string{"vhost", "*", "vcluster", "$", "*"}},
	// cluster.(<cluster_name>.)*
	{name: "envoy.cluster_name", tokens: []string{"cluster", "$", "**"}},
	// listener.[<address>.]http.(<stat_prefix>.)*
	{name: "envoy.http_conn_manager_prefix", re: regexp.MustCompile(`^listener\..*?\.http\.(([^\.]+)\.)`)},
	// http.(<stat_prefix>.)*
	{name: "envoy.http_conn_manager_prefix", tokens: []string{"http", "$", "**"}},
	// listener.(<address|stat_prefix>.)*, never "admin".
	{name: "envoy.listener_address", not: "admin",
		re: regexp.MustCompile(`^listener\.(((?:(?:\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[[a-fA-F_\d]+\])_\d+)|[^\.]+)\.)`)},
	// vhost.(<virtual host name>.)*
	{name: "envoy.virtual_host", tokens: []string{"vhost", "$", "**"}},
}

// ExtractTags applies Envoy's default tag extractors to a stat name: it returns the tag-extracted name
// (the name without the parts the tags took) and the tags, e.g. "cluster.backend.upstream_rq_503" →
// "cluster.upstream_rq", [envoy.response_code=503, envoy.cluster_name=backend]. Each extractor reads
// the whole original name, as Envoy's TagProducerImpl::produceTags does, and a tag name is taken once.
func ExtractTags(name string) (string, []Tag) {
	var (
		tags   []Tag
		remove [][2]int
	)
	taken := func(n string) bool {
		for _, t := range tags {
			if t.Name == n {
				return true
			}
		}
		return false
	}
	for _, x := range defaultTagExtractors {
		if taken(x.name) {
			continue
		}
		var (
			value    string
			from, to int
			ok       bool
		)
		if x.re != nil {
			if m := x.re.FindStringSubmatchIndex(name); m != nil {
				value, from, to, ok = name[m[4]:m[5]], m[2], m[3], true
			}
		} else {
			value, from, to, ok = matchTokens(name, x.tokens)
		}
		if !ok || value == x.not {
			continue
		}
		tags = append(tags, Tag{Name: x.name, Value: value})
		remove = append(remove, [2]int{from, to})
	}
	if len(remove) == 0 {
		return name, nil
	}
	var b strings.Builder
	for i := range len(name) {
		if !inAny(i, remove) {
			b.WriteByte(name[i])
		}
	}
	return b.String(), tags
}

func inAny(i int, spans [][2]int) bool {
	for _, s := range spans {
		if i >= s[0] && i < s[1] {
			return true
		}
	}
	return false
}

// matchTokens matches a dotted name against a token pattern whose only wildcard after "$" is a final
// "**" (all the default extractors the proxy applies): the value is the token at "$", and the part to
// remove is it with the dot that follows it (or, as the last token, the dot before it).
func matchTokens(name string, pattern []string) (value string, from, to int, ok bool) {
	tokens := strings.Split(name, ".")
	pos := 0
	for i, p := range pattern {
		if p == "**" { // final: one or more tokens left
			if i != len(pattern)-1 || len(tokens) <= i {
				return "", 0, 0, false
			}
			return value, from, to, true
		}
		if i >= len(tokens) {
			return "", 0, 0, false
		}
		t := tokens[i]
		switch p {
		case "$":
			value, from, to = t, pos, pos+len(t)
			if i < len(tokens)-1 {
				to++
			} else if from > 0 {
				from--
			}
		case "*":
		default:
			if p != t {
				return "", 0, 0, false
			}
		}
		pos += len(t) + 1
	}
	return value, from, to, len(tokens) == len(pattern)
}
