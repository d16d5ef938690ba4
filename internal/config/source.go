package config

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Source says where a value of a call comes from: a metadata header or a field of the request
// message ("field:order.id"). Its zero value is "nowhere".
type Source struct {
	Metadata string // lower-case header name
	Field    string // dotted field path of the request message
}

// ParseSource reads "metadata:<name>" or "field:<path>".
func ParseSource(s string) (Source, error) {
	kind, val, ok := strings.Cut(strings.TrimSpace(s), ":")
	val = strings.TrimSpace(val)
	if !ok || val == "" {
		return Source{}, fmt.Errorf("%q: want metadata:<header> or field:<field.path>", s)
	}
	switch kind {
	case "metadata":
		return Source{Metadata: strings.ToLower(val)}, nil
	case "field":
		for _, part := range strings.Split(val, ".") {
			if part == "" {
				return Source{}, fmt.Errorf("%q: empty segment in field path", s)
			}
		}
		return Source{Field: val}, nil
	}
	return Source{}, fmt.Errorf("%q: want metadata:<header> or field:<field.path>", s)
}

// IsZero reports whether no source is set.
func (s Source) IsZero() bool { return s.Metadata == "" && s.Field == "" }

func (s Source) String() string {
	switch {
	case s.Metadata != "":
		return "metadata:" + s.Metadata
	case s.Field != "":
		return "field:" + s.Field
	}
	return ""
}

func (s Source) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

func (s *Source) UnmarshalJSON(b []byte) error {
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return fmt.Errorf("want a string such as \"metadata:order-id\", got %s", b)
	}
	if str == "" {
		*s = Source{} // as Marshal renders the zero value
		return nil
	}
	v, err := ParseSource(str)
	if err != nil {
		return err
	}
	*s = v
	return nil
}
