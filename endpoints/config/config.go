// Package config is the config loading that every role shares: defaults,
// one YAML file, TUNBOND_* environment variables and flags, decoded into the
// role's own schema (a struct with mapstructure tags); unknown keys and bad
// values are errors that name the key. Each role owns its schema and its
// defaults; the defaults a role declares are the ones its tests and the lab
// run.
package config

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// DefaultEach sets key to value in every mapping of a YAML list that lacks
// it (a list's entries get no defaults from viper).
func DefaultEach(list []any, key string, value any) {
	for _, e := range list {
		if m, ok := e.(map[string]any); ok {
			if _, set := m[key]; !set {
				m[key] = value
			}
		}
	}
}

// Settings are the raw settings a Load fix may adjust.
type Settings interface {
	Get(key string) any
	Set(key string, value any)
}

// Load is tunbond's config loading, shared by its roles: defaults, the
// YAML file, TUNBOND_* environment variables (dots as underscores), then
// the flags named in flagKeys that were set, decoded into out (a struct with
// mapstructure tags). A key out has no field for is an error naming it.
// fix, if not nil, adjusts the raw settings before decoding.
func Load(file string, fs *pflag.FlagSet, defaults map[string]any, flagKeys map[string]string, out any, fix func(Settings)) error {
	v := viper.New()
	for k, d := range defaults {
		v.SetDefault(k, d)
	}
	v.SetEnvPrefix("TUNBOND")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if file != "" {
		v.SetConfigFile(file)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return fmt.Errorf("config %s: %w", file, err)
		}
		if err := checkKeys(v.AllSettings(), reflect.TypeOf(out).Elem(), ""); err != nil {
			return fmt.Errorf("config %s: %w", file, err)
		}
		if fix != nil {
			fix(v)
		}
	}
	if fs != nil {
		for flag, key := range flagKeys {
			if f := fs.Lookup(flag); f != nil && f.Changed {
				v.Set(key, f.Value.String())
			}
		}
	}
	if err := v.Unmarshal(out); err != nil {
		return fmt.Errorf("config: %s", cleanDecodeError(err))
	}
	return nil
}

// checkKeys reports the first key in m that t has no field for.
func checkKeys(m map[string]any, t reflect.Type, prefix string) error {
	known := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		if tag := t.Field(i).Tag.Get("mapstructure"); tag != "" {
			known[tag] = t.Field(i).Type
		}
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ft, ok := known[strings.ToLower(k)]
		if !ok {
			return fmt.Errorf("unknown key %q", prefix+k)
		}
		switch val := m[k].(type) {
		case map[string]any:
			if ft.Kind() == reflect.Struct {
				if err := checkKeys(val, ft, prefix+k+"."); err != nil {
					return err
				}
			}
		case []any:
			if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
				for i, e := range val {
					em, ok := e.(map[string]any)
					if !ok {
						return fmt.Errorf("%s%s[%d]: not a mapping", prefix, k, i)
					}
					if err := checkKeys(em, ft.Elem(), fmt.Sprintf("%s%s[%d].", prefix, k, i)); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

func cleanDecodeError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "decoding failed due to the following error(s):")
	return strings.TrimSpace(s)
}

// Problems collects what is wrong with a config, each error naming its key.
type Problems []error

// Add records a problem with key.
func (p *Problems) Add(key, format string, a ...any) {
	*p = append(*p, fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, a...)))
}

// InterfaceName checks a network interface name at key.
func (p *Problems) InterfaceName(key, name string) {
	if name == "" || len(name) > 15 {
		p.Add(key, "%q must be 1 to 15 characters", name)
	}
}

// Err is all the problems, or nil.
func (p Problems) Err() error { return errors.Join(p...) }
