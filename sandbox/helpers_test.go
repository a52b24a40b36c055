package sandbox

import "github.com/polos-run/polos/perr"

func perrCode(err error) perr.Code { return perr.CodeOf(err) }
